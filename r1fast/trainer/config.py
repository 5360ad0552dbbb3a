"""GRPOConfig: every knob of a GRPO run, with TRL's names and meanings where TRL has the knob."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from r1fast import reference
from r1fast.loss import BACKENDS

LR_SCHEDULES = ("constant", "linear", "cosine")
# Keys a resumed run may change without allow_config_change: how long the run goes, how often it saves, logs and
# evaluates, where it writes and reports, the user's notes, how an FSDP rollout gathers its weights (the same tokens
# either way). Every other key changes the data or the math of the steps to come.
RUN_LENGTH_KEYS = ("max_steps", "num_train_epochs", "save_steps", "save_every_minutes", "save_total_limit",
                   "logging_steps", "output_dir", "extra", "eval_steps", "num_generations_eval", "eval_temperature",
                   "report_to", "disable_tqdm", "fsdp_rollout_gather")  # fmt: skip
REPORT_TO = ("tensorboard", "wandb")  # besides "none" and "all" (every one installed), as TRL/transformers

# The R1-Zero template of the DeepSeek-R1 paper (Table 1): the reasoning in <think> tags, the answer in <answer>
# tags. A string prompt goes in as {prompt}; a chat prompt gets the instruction as its system message.
R1_SYSTEM_PROMPT = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves "
                    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
                    "user with the answer. The reasoning process and answer are enclosed within <think> </think> and "
                    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> "
                    "answer here </answer>.")  # fmt: skip
PROMPT_TEMPLATES = {"r1": R1_SYSTEM_PROMPT + " User: {prompt}. Assistant:"}
SYSTEM_PROMPTS = {"r1": R1_SYSTEM_PROMPT}


def apply_template(template: str, prompt: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A prompt in a template: `template` is a name of PROMPT_TEMPLATES ("r1") or a string with "{prompt}". A string
    prompt is put in the template; a chat prompt (a list of messages) gets a named template's instruction as its
    system message (unless it has one) and is otherwise returned as is."""
    if isinstance(prompt, str):
        return PROMPT_TEMPLATES.get(template, template).replace("{prompt}", prompt)
    messages = list(prompt)
    if template in SYSTEM_PROMPTS and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": SYSTEM_PROMPTS[template]})
    return messages


class RunConfig:
    """What the configs of GRPOTrainer and SFTTrainer share beyond their fields' names: serialisation, the
    fingerprint that guards a resume, and the checks of the optimizer, run and reporting keys."""

    def check_run_fields(self) -> None:
        """The optimizer, schedule, backend, checkpoint, evaluation and reporting keys; ValueError naming the key."""
        for name in ("learning_rate", "weight_decay", "adam_epsilon", "max_grad_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.lr_scheduler_type not in LR_SCHEDULES:
            raise ValueError(f"lr_scheduler_type must be one of {LR_SCHEDULES}, got {self.lr_scheduler_type!r}")
        if self.loss_backend not in BACKENDS:
            raise ValueError(f"loss_backend must be one of {BACKENDS}, got {self.loss_backend!r}")
        if not (isinstance(self.save_every_minutes, (int, float)) and 0 <= self.save_every_minutes < math.inf):
            raise ValueError(f"save_every_minutes must be a number >= 0 (0 = off), got {self.save_every_minutes!r}")
        if self.eval_steps is not None and not (isinstance(self.eval_steps, int) and self.eval_steps >= 1):
            raise ValueError(f"eval_steps must be an int >= 1 or None (evaluate after the last step only), got "
                             f"{self.eval_steps!r}")  # fmt: skip
        targets = [self.report_to] if isinstance(self.report_to, str) else self.report_to
        if not (isinstance(targets, (list, tuple)) and all(isinstance(t, str) for t in targets)):
            raise ValueError(f"report_to must be a name or a list of names, got {self.report_to!r}")
        unknown = [t for t in targets if t not in (*REPORT_TO, "none", "all")]
        if unknown:
            raise ValueError(f"report_to: unknown {unknown} (one of none, all, {', '.join(REPORT_TO)})")
        if self.disable_tqdm not in (None, True, False):
            raise ValueError(f"disable_tqdm must be true, false or null (a bar when the console is a terminal), got "
                             f"{self.disable_tqdm!r}")  # fmt: skip

    def check_run_length(self) -> None:
        """max_steps: an int >= 1, or -1 (TRL's default) for num_train_epochs (a number > 0) over the dataset."""
        if not (isinstance(self.max_steps, int) and not isinstance(self.max_steps, bool)
                and (self.max_steps >= 1 or self.max_steps == -1)):  # fmt: skip
            raise ValueError(f"max_steps must be an int >= 1, or -1 (num_train_epochs over the dataset), got "
                             f"{self.max_steps!r}")  # fmt: skip
        epochs = self.num_train_epochs
        if not (isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and 0 < epochs < math.inf):
            raise ValueError(f"num_train_epochs must be a number > 0, got {epochs!r}")

    def progress_bar(self, stream: Any) -> bool:
        """Whether a run shows a progress bar on `stream`: disable_tqdm False, or None and stream is a terminal."""
        if stream is None or self.disable_tqdm:
            return False
        return self.disable_tqdm is False or bool(getattr(stream, "isatty", lambda: False)())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A hash of every key but RUN_LENGTH_KEYS: equal fingerprints continue a run the same way."""
        return config_fingerprint(self.to_dict())

    def changed_keys(self, other: dict[str, Any]) -> list[str]:
        """The keys (RUN_LENGTH_KEYS aside) whose values differ between this config and `other` (a to_dict())."""
        mine, theirs = _compared(self.to_dict()), _compared(other)
        return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k, None) != theirs.get(k, None))

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """A config from to_dict()'s output; TypeError for an unknown name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown {cls.__name__} field(s) {unknown}")
        return cls(**values)


@dataclass
class GRPOConfig(RunConfig):
    """A GRPO run. Names follow TRL's GRPOConfig; a step is one optimizer step, as TRL counts them (num_iterations
    steps on each generation batch).

    A generation batch: ``prompts_per_step`` prompts are drawn (a fresh shuffle of the dataset every epoch, from
    ``seed``), each is put in ``prompt_template`` (``{prompt}`` is replaced; "r1": the R1-Zero template) and
    tokenized, the sampler generates ``num_generations`` completions of each, the rewards score them, group-relative
    advantages follow; then each of its ``num_iterations`` optimizer steps (GRPO's mu; the old log-probs are the
    policy's before the first update, as in TRL) back-propagates the loss over all ``prompts_per_step *
    num_generations`` completions, ``micro_batch_size`` completions at a time. A checkpoint between two steps of one
    batch saves the batch, so a resumed run continues bit-identically.

    Generation: temperature, top_p, top_k, min_p, repetition_penalty, max_prompt_length (prompts are truncated
    from the left, as TRL does), max_completion_length. Loss: loss_type, beta (k3 KL to the initial policy; > 0
    keeps a frozen copy of the model), epsilon, epsilon_high, delta, importance_sampling_level,
    mask_truncated_completions, use_bias_correction_kl (the KL times the importance ratio, TRL's default),
    top_entropy_quantile (the entropy mask, its quantile over every rank's tokens), off_policy_mask_threshold (the
    off-policy sequence mask, against the sampler's log-probs), entropy_coef (the entropy bonus; with
    use_adaptive_entropy TRL's controller moves it within [entropy_coef_min, entropy_coef_max] by
    entropy_coef_delta per step around entropy_target), vespo_k_pos/_lambda_pos/_k_neg/_lambda_neg (vespo),
    vllm_importance_sampling_correction/_mode/_clip_min/_clip_max (TRL's train/inference mismatch correction: r1fast's
    sampler plays vLLM's part, its log-probs against the policy's old ones; TRL's default, on, costs one no-grad
    forward per step when num_iterations is 1).
    Every field named as one of TRL 1.16's GRPOConfig has TRL's default and meaning (tests/test_defaults.py).
    Advantages: scale_rewards, multi_objective_aggregation, reward_weights (one per
    reward function). Optimizer: AdamW with learning_rate, weight_decay, adam_beta1/2, adam_epsilon, max_grad_norm
    (0 = no clipping), lr_scheduler_type with warmup_steps; gradient_checkpointing (Hugging Face's, non-reentrant:
    activations of the training forward recomputed in the backward). Kernels: loss_backend ("auto": Triton on CUDA),
    fp32_lm_head (the LM head's logits in float32 from the bf16 weights, in the loss, the old/ref log-probs and the
    sampler's last projection: train/inference probabilities agree better; not TRL's cast_lm_head_to_fp32, whose
    backward GEMMs are float32 too),
    sampler_block_size, sampler_kv_cache_memory (bytes; None = the sampler's default, half the free GPU memory at
    the first generation, which stays allocated while training unless free_kv_cache), free_kv_cache (release the
    KV pool for the training step; the next generation allocates it again and recaptures its CUDA graphs).
    Scaling: fsdp (true, or TRL's "full_shard": shard the model, gradients and optimizer state with FSDP2, gathered
    parameters in fsdp_param_dtype, "auto" = the model's, gradients reduced in float32; fsdp_rollout_gather: the
    rollout on the whole model gathered, "model", or on one layer gathered at a time with the next one's gather in
    flight, "layer", for models whose gathered copy does not fit next to the KV pool; "auto" = "model" where it
    fits: r1fast.trainer.fsdp); lora_r > 0 (train PEFT LoRA adapters of rank lora_r, lora_alpha, lora_dropout on
    lora_target_modules, None = PEFT's default for the model type; TRL's ModelConfig names and defaults:
    r1fast.trainer.lora). A PeftModel passed as the model trains its own adapters.
    Run: max_steps (optimizer steps; -1, TRL's default: num_train_epochs passes over the dataset, num_iterations
    steps per generation batch), seed, output_dir, logging_steps (reports the mean of the last logging_steps steps;
    metrics.jsonl has every step, the rollout's metrics on the step that generated it); checkpoints every save_steps
    steps and every save_every_minutes minutes (0 turns either off) and at the end, keeping the newest
    save_total_limit (None: all).
    Evaluation (with the trainer's eval_dataset): every eval_steps steps (None: after the last only),
    num_generations_eval completions per row (TRL's name; None: 1 when greedy, else num_generations) at
    eval_temperature (0 = greedy), logged as "eval/<metric>". Reporting: report_to ("none", "all", "tensorboard",
    "wandb" or a list, as TRL), disable_tqdm (None: a progress bar when the console is a terminal). FIELD_HELP says
    what each key means.
    TRL's rules hold: num_generations >= 2 (a group of one has no relative advantage), temperature > 0, and
    micro_batch_size divides prompts_per_step * num_generations.
    """

    # what a step sees
    prompts_per_step: int = 8
    num_generations: int = 8
    micro_batch_size: int = 8
    num_iterations: int = 1
    prompt_template: str = "{prompt}"
    max_prompt_length: int | None = 512
    # generation
    max_completion_length: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    # loss
    loss_type: str = "dapo"
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    delta: float | None = None
    importance_sampling_level: str = "token"
    mask_truncated_completions: bool = False
    use_bias_correction_kl: bool = True
    top_entropy_quantile: float = 1.0
    off_policy_mask_threshold: float | None = None
    entropy_coef: float = 0.0
    vespo_k_pos: float = 2.0
    vespo_lambda_pos: float = 3.0
    vespo_k_neg: float = 3.0
    vespo_lambda_neg: float = 2.0
    use_adaptive_entropy: bool = False
    entropy_coef_min: float = 0.0
    entropy_coef_max: float = 1.0
    entropy_coef_delta: float = 0.005
    entropy_target: float = 0.2
    vllm_importance_sampling_correction: bool = True
    vllm_importance_sampling_mode: str = "sequence_mask"
    vllm_importance_sampling_clip_min: float | None = None
    vllm_importance_sampling_clip_max: float | None = 3.0
    # advantages
    scale_rewards: str = "group"
    multi_objective_aggregation: str = "sum_then_normalize"
    reward_weights: list[float] | None = None
    # optimizer
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = "linear"
    warmup_steps: int = 0
    gradient_checkpointing: bool = True
    # kernels
    loss_backend: str = "auto"
    fp32_lm_head: bool = False
    sampler_block_size: int = 16
    sampler_kv_cache_memory: int | None = None
    free_kv_cache: bool = False
    # scaling (r1fast.trainer.fsdp, r1fast.trainer.lora)
    fsdp: bool | str | list[str] | None = None
    fsdp_param_dtype: str = "bfloat16"
    fsdp_rollout_gather: str = "auto"
    lora_r: int = 0
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    # run
    max_steps: int = -1
    num_train_epochs: float = 3.0
    seed: int = 42
    output_dir: str | None = None
    logging_steps: int = 10
    save_steps: int = 500
    save_every_minutes: float = 30.0
    save_total_limit: int | None = None
    # evaluation and reporting
    eval_steps: int | None = None
    num_generations_eval: int | None = None
    eval_temperature: float = 0.0
    report_to: str | list[str] = "none"
    disable_tqdm: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the user's own notes, saved with checkpoints

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1, why: str = "") -> None:
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}{why}")

        for name in ("prompts_per_step", "micro_batch_size", "num_iterations", "max_completion_length",
                     "logging_steps", "sampler_block_size"):  # fmt: skip
            positive_int(name)
        self.check_run_length()
        positive_int("num_generations", 2, " (advantages compare completions of one prompt; TRL requires >= 2)")
        for name in ("save_steps", "warmup_steps", "seed"):
            positive_int(name, 0)
        for name in ("max_prompt_length", "save_total_limit"):
            if getattr(self, name) is not None:
                positive_int(name)
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature!r} (GRPO needs sampling: greedy groups "
                             "have no variance)")  # fmt: skip
        completions = self.prompts_per_step * self.num_generations
        if completions % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must divide prompts_per_step * num_generations = "
                f"{completions} (every micro-batch weighs the same in the accumulated loss)"
            )
        if self.prompt_template not in PROMPT_TEMPLATES and "{prompt}" not in self.prompt_template:
            raise ValueError(f"prompt_template must be one of {sorted(PROMPT_TEMPLATES)} or contain '{{prompt}}'")
        reference.check_loss_config(self.loss_type, self.importance_sampling_level, self.beta, self.epsilon,
                                    self.epsilon_high, self.delta, ref_logps_given=True,
                                    top_entropy_quantile=self.top_entropy_quantile,
                                    off_policy_mask_threshold=self.off_policy_mask_threshold,
                                    entropy_coef=self.entropy_coef)  # fmt: skip
        for name in ("entropy_coef_min", "entropy_coef_max", "entropy_coef_delta", "entropy_target"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.entropy_coef_min > self.entropy_coef_max:
            raise ValueError(f"entropy_coef_min={self.entropy_coef_min} exceeds entropy_coef_max="
                             f"{self.entropy_coef_max}")  # fmt: skip
        if self.vllm_importance_sampling_mode not in reference.VLLM_IMPORTANCE_SAMPLING_MODES:
            raise ValueError(f"vllm_importance_sampling_mode must be one of "
                             f"{reference.VLLM_IMPORTANCE_SAMPLING_MODES}, got {self.vllm_importance_sampling_mode!r}")
        for name in ("vllm_importance_sampling_clip_min", "vllm_importance_sampling_clip_max"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value >= 0 and not math.isnan(value)):
                raise ValueError(f"{name} must be a number >= 0 or None, got {value!r}")
        scale = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)
        if scale not in reference.SCALE_REWARDS:
            raise ValueError(f"scale_rewards must be one of {reference.SCALE_REWARDS}, got {self.scale_rewards!r}")
        if self.multi_objective_aggregation not in reference.MULTI_OBJECTIVE_AGGREGATIONS:
            raise ValueError(
                f"multi_objective_aggregation must be one of {reference.MULTI_OBJECTIVE_AGGREGATIONS}, "
                f"got {self.multi_objective_aggregation!r}"
            )
        self.check_run_fields()
        if self.num_generations_eval is not None:
            positive_int("num_generations_eval")
        if not (isinstance(self.eval_temperature, (int, float)) and self.eval_temperature >= 0):
            raise ValueError(f"eval_temperature must be >= 0 (0 = greedy), got {self.eval_temperature!r}")
        if self.reward_weights is not None:
            self.reward_weights = [float(w) for w in self.reward_weights]
        self.check_scaling_fields()
        # The sampling knobs are checked by SamplingParams, built here once so that a bad value fails now.
        self.sampling_params(seed=0)
        self.eval_sampling_params()

    def check_scaling_fields(self) -> None:
        """fsdp, fsdp_param_dtype, fsdp_rollout_gather and the lora_* keys; ValueError naming the key."""
        from r1fast.trainer.fsdp import DTYPES, check_rollout_gather

        options = self.fsdp.split() if isinstance(self.fsdp, str) else self.fsdp
        if not (options in (None, True, False) or (isinstance(options, (list, tuple)) and all(
                o in ("full_shard", "auto_wrap") for o in options) and (not options or "full_shard" in options))):
            raise ValueError(f"fsdp must be true, false/null, or TRL's 'full_shard' (r1fast shards every decoder layer "
                             f"with FSDP2's fully_shard; other TRL options are not supported), got {self.fsdp!r}")
        if self.fsdp_param_dtype != "auto" and self.fsdp_param_dtype not in DTYPES:
            raise ValueError(f"fsdp_param_dtype must be 'auto' or one of {sorted(DTYPES)}, got "
                             f"{self.fsdp_param_dtype!r}")  # fmt: skip
        check_rollout_gather(self.fsdp_rollout_gather)
        if self.fsdp_rollout_gather == "layer" and not self.fsdp:
            raise ValueError("fsdp_rollout_gather='layer' streams the layers of a sharded model: it needs fsdp=true")
        if not (isinstance(self.lora_r, int) and not isinstance(self.lora_r, bool) and self.lora_r >= 0):
            raise ValueError(f"lora_r must be an int >= 0 (0 = no LoRA), got {self.lora_r!r}")
        if not (isinstance(self.lora_alpha, (int, float)) and 0 < self.lora_alpha < math.inf):
            raise ValueError(f"lora_alpha must be a finite number > 0, got {self.lora_alpha!r}")
        if not (isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1):
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        targets = self.lora_target_modules
        if targets is not None and not (isinstance(targets, str) or (isinstance(targets, (list, tuple)) and targets
                                                                     and all(isinstance(t, str) for t in targets))):
            raise ValueError(f"lora_target_modules must be module names (e.g. ['q_proj', 'v_proj']), 'all-linear' or "
                             f"None (PEFT's default for the model type), got {targets!r}")  # fmt: skip
        if self.fsdp and self.lora_r:
            raise ValueError("fsdp with LoRA (lora_r > 0) is not supported: LoRA trains a 7B model on one GPU, FSDP "
                             "shards a fully trained one")  # fmt: skip

    def eval_sampling_params(self):
        """The SamplingParams of an evaluation: num_generations_eval completions per row (None: 1 when greedy, else
        num_generations) at eval_temperature (0 = greedy), with a fixed seed (the training's random state is not
        touched, so evaluating does not change the run)."""
        from r1fast.sampler import SamplingParams

        n = self.num_generations_eval or (1 if self.eval_temperature == 0 else self.num_generations)
        return SamplingParams(n=n, temperature=self.eval_temperature, top_p=self.top_p, top_k=self.top_k,
                              min_p=self.min_p or 0.0, repetition_penalty=self.repetition_penalty,
                              max_tokens=self.max_completion_length, seed=self.seed)  # fmt: skip

    def sampling_params(self, seed: int):
        """The SamplingParams of one step's generation."""
        from r1fast.sampler import SamplingParams

        return SamplingParams(n=self.num_generations, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, min_p=self.min_p or 0.0, repetition_penalty=self.repetition_penalty,
                              max_tokens=self.max_completion_length, seed=seed)  # fmt: skip

    def loss_options(self) -> dict[str, Any]:
        """The GRPO loss options (r1fast.fused_linear_grpo_loss's **config) this config sets."""
        return dict(loss_type=self.loss_type, beta=self.beta, epsilon=self.epsilon, epsilon_high=self.epsilon_high,
                    delta=self.delta, importance_sampling_level=self.importance_sampling_level,
                    max_completion_length=self.max_completion_length,
                    use_bias_correction_kl=self.use_bias_correction_kl, top_entropy_quantile=self.top_entropy_quantile,
                    off_policy_mask_threshold=self.off_policy_mask_threshold, entropy_coef=self.entropy_coef,
                    vespo_k_pos=self.vespo_k_pos, vespo_lambda_pos=self.vespo_lambda_pos,
                    vespo_k_neg=self.vespo_k_neg, vespo_lambda_neg=self.vespo_lambda_neg)  # fmt: skip



def _compared(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in RUN_LENGTH_KEYS}


def config_fingerprint(values: dict[str, Any]) -> str:
    """GRPOConfig.fingerprint of a to_dict() output (a checkpoint's config)."""
    text = json.dumps(_compared(values), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# What each config key means, for `r1fast train --help` and `r1fast sft --help` (tests/test_cli.py checks that every
# key of GRPOConfig and SFTConfig has a line here).
FIELD_HELP = {
    "prompts_per_step": "prompts drawn per step (per rank)",
    "num_generations": "completions sampled per prompt (GRPO's group size G, >= 2)",
    "micro_batch_size": "completions per forward/backward pass (divides prompts_per_step * num_generations)",
    "num_iterations": "optimizer steps per generation batch (GRPO's mu)",
    "prompt_template": "'r1' (the R1-Zero instruction of the DeepSeek-R1 paper) or a string with {prompt}",
    "max_prompt_length": "prompt tokens kept (the first ones are cut, as TRL); null = all",
    "max_completion_length": "most tokens sampled per completion",
    "temperature": "sampling temperature of the rollouts (> 0)",
    "top_p": "nucleus sampling threshold of the rollouts",
    "top_k": "top-k sampling of the rollouts (0 = off)",
    "min_p": "min-p sampling of the rollouts (null = off)",
    "repetition_penalty": "repetition penalty of the rollouts (1 = off)",
    "loss_type": "grpo, bnpo, dr_grpo, dapo, cispo, sapo, luspo or vespo (TRL's)",
    "beta": "weight of the k3 KL to the initial policy (0 = no reference model)",
    "epsilon": "lower clip range of the policy ratio",
    "epsilon_high": "upper clip range (null = epsilon; DAPO's clip-higher)",
    "delta": "two-sided clip of the ratio (null = off)",
    "importance_sampling_level": "token or sequence (GSPO) importance ratios",
    "mask_truncated_completions": "no loss on completions cut by max_completion_length",
    "use_bias_correction_kl": "the KL times the importance ratio (TRL's default)",
    "top_entropy_quantile": "train only the tokens in this top quantile of entropy (1 = all)",
    "off_policy_mask_threshold": "mask negative-advantage sequences whose mean log-ratio sampler/policy exceeds this "
                                 "(null = off)",
    "entropy_coef": "weight of a static entropy bonus",
    "vespo_k_pos": "vespo: k of positive advantages",
    "vespo_lambda_pos": "vespo: lambda of positive advantages",
    "vespo_k_neg": "vespo: k of negative advantages",
    "vespo_lambda_neg": "vespo: lambda of negative advantages",
    "use_adaptive_entropy": "TRL's adaptive entropy coefficient controller",
    "entropy_coef_min": "adaptive entropy: lowest coefficient",
    "entropy_coef_max": "adaptive entropy: highest coefficient",
    "entropy_coef_delta": "adaptive entropy: change of the coefficient per step",
    "entropy_target": "adaptive entropy: the entropy aimed at",
    "vllm_importance_sampling_correction": "correct for the sampler/trainer log-prob mismatch (TRL's)",
    "vllm_importance_sampling_mode": "how that correction truncates or masks (TRL's modes)",
    "vllm_importance_sampling_clip_min": "that correction's lower bound (null = none)",
    "vllm_importance_sampling_clip_max": "that correction's upper bound",
    "scale_rewards": "group, batch or none: what the advantages are divided by",
    "multi_objective_aggregation": "sum_then_normalize or normalize_then_sum (GDPO) over several rewards",
    "reward_weights": "one weight per reward (null = 1 each)",
    "learning_rate": "AdamW's peak learning rate",
    "weight_decay": "AdamW's weight decay",
    "adam_beta1": "AdamW's beta1",
    "adam_beta2": "AdamW's beta2",
    "adam_epsilon": "AdamW's epsilon",
    "max_grad_norm": "clip the gradient norm to this (0 = no clipping)",
    "lr_scheduler_type": "constant, linear or cosine decay after the warmup",
    "warmup_steps": "optimizer steps of linear warmup from 0",
    "gradient_checkpointing": "recompute the decoder's activations in the backward (less memory)",
    "loss_backend": "auto (Triton on CUDA), triton or reference",
    "fp32_lm_head": "the LM head's logits in float32 from bf16/fp16 weights",
    "sampler_block_size": "tokens per KV-cache block of the sampler",
    "sampler_kv_cache_memory": "bytes of the sampler's KV pool (null = half the free GPU memory)",
    "free_kv_cache": "release the KV pool during the training step",
    "fsdp": "shard the model, gradients and optimizer state over the ranks (FSDP2; under torchrun)",
    "fsdp_param_dtype": "dtype of FSDP's gathered parameters ('auto' = the model's)",
    "fsdp_rollout_gather": "rollout on the whole model gathered ('model'), one layer at a time ('layer') or 'auto'",
    "lora_r": "rank of PEFT LoRA adapters (0 = train the full model)",
    "lora_alpha": "LoRA's alpha",
    "lora_dropout": "LoRA's dropout",
    "lora_target_modules": "modules LoRA adapts (null = PEFT's default for the model)",
    "max_steps": "optimizer steps of the run (-1: num_train_epochs passes over the dataset, TRL's default)",
    "num_train_epochs": "passes over the dataset when max_steps is -1",
    "seed": "seed of the data order and the sampling",
    "output_dir": "where metrics.jsonl, checkpoints, final/ and plots go",
    "logging_steps": "report the mean of the last this many steps (metrics.jsonl has every step)",
    "save_steps": "checkpoint every this many steps (0 = off)",
    "save_every_minutes": "also checkpoint every this many minutes (0 = off)",
    "save_total_limit": "keep the newest this many checkpoints (null = all)",
    "eval_steps": "evaluate eval_dataset every this many steps (null = after the last step only)",
    "num_generations_eval": "completions per eval prompt (null = 1 when greedy, else num_generations)",
    "eval_temperature": "sampling temperature of evaluation (0 = greedy)",
    "report_to": "none, all, tensorboard, wandb, or a list (TensorBoard files in <output_dir>/runs)",
    "disable_tqdm": "true: no progress bar; false: always; null: when the console is a terminal",
    "extra": "your own notes (an object), saved with checkpoints",
    # SFTConfig's own
    "rows_per_step": "dataset rows per optimizer step (per rank)",
    "micro_batch_tokens": "most tokens per forward/backward pass (sequences packed up to this)",
    "max_length": "tokens kept of prompt + completion (the start; null = all)",
    "completion_only_loss": "train on the completion tokens only (false: every token after the first; null: "
                            "the completion of prompt/completion rows, every token of a messages chat)",
    "padding_free": "pack a micro-batch's sequences into one row, positions restarting per sequence",
}


def describe_fields(cls: type) -> str:
    """Every field of a config dataclass, one line each: name, default and meaning (FIELD_HELP), for --help."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        lines.append(f"  {f.name} = {json.dumps(default)}: {FIELD_HELP.get(f.name, '')}".rstrip(": "))
    return "\n".join(lines)
