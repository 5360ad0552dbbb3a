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
# Keys a resumed run may change without allow_config_change: how long the run goes, how often it saves and logs,
# where it writes, the user's notes. Every other key changes the data or the math of the steps to come.
RUN_LENGTH_KEYS = ("max_steps", "save_steps", "save_every_minutes", "save_total_limit", "logging_steps", "output_dir",
                   "extra")  # fmt: skip


@dataclass
class GRPOConfig:
    """A GRPO run. Names follow TRL's GRPOConfig; one optimizer step per generation batch (and per iteration).

    A step: ``prompts_per_step`` prompts are drawn (a fresh shuffle of the dataset every epoch, from ``seed``),
    each is put in ``prompt_template`` (``{prompt}`` is replaced) and tokenized, the sampler generates
    ``num_generations`` completions of each, the rewards score them, group-relative advantages follow, and the
    loss over all ``prompts_per_step * num_generations`` completions is back-propagated ``micro_batch_size``
    completions at a time before one optimizer step, repeated ``num_iterations`` times (GRPO's mu; the old
    log-probs are the policy's before the first update, as in TRL).

    Generation: temperature, top_p, top_k, min_p, repetition_penalty, max_prompt_length (prompts are truncated
    from the left, as TRL does), max_completion_length. Loss: loss_type, beta (k3 KL to the initial policy; > 0
    keeps a frozen copy of the model), epsilon, epsilon_high, delta, importance_sampling_level,
    mask_truncated_completions, use_bias_correction_kl (the KL times the importance ratio, TRL's default),
    top_entropy_quantile (the entropy mask), off_policy_mask_threshold (the off-policy sequence mask, against the
    old log-probs), entropy_coef (a static entropy bonus), vespo_k_pos/_lambda_pos/_k_neg/_lambda_neg (vespo).
    Every field named as one of TRL 1.16's GRPOConfig has TRL's default (tests/test_defaults.py; three run-length
    and cadence fields aside). Advantages: scale_rewards, multi_objective_aggregation, reward_weights (one per
    reward function). Optimizer: AdamW with learning_rate, weight_decay, adam_beta1/2, adam_epsilon, max_grad_norm
    (0 = no clipping), lr_scheduler_type with warmup_steps; gradient_checkpointing (Hugging Face's, non-reentrant:
    activations of the training forward recomputed in the backward). Kernels: loss_backend ("auto": Triton on CUDA),
    fp32_lm_head (the LM head's logits in float32 from the bf16 weights, in the loss, the old/ref log-probs and the
    sampler's last projection: train/inference probabilities agree better; not TRL's cast_lm_head_to_fp32, whose
    backward GEMMs are float32 too),
    sampler_block_size, sampler_kv_cache_memory (bytes; None = the sampler's default, half the free GPU memory at
    the first generation, which stays allocated while training unless free_kv_cache), free_kv_cache (release the
    KV pool for the training step; the next generation allocates it again and recaptures its CUDA graphs).
    Run: max_steps, seed, output_dir, logging_steps; checkpoints every save_steps steps and every
    save_every_minutes minutes (0 turns either off) and at the end, keeping the newest save_total_limit (None: all).
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
    # run
    max_steps: int = 100
    seed: int = 42
    output_dir: str | None = None
    logging_steps: int = 1
    save_steps: int = 50
    save_every_minutes: float = 30.0
    save_total_limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the user's own notes, saved with checkpoints

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1, why: str = "") -> None:
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}{why}")

        for name in ("prompts_per_step", "micro_batch_size", "num_iterations", "max_completion_length", "max_steps",
                     "logging_steps", "sampler_block_size"):  # fmt: skip
            positive_int(name)
        positive_int("num_generations", 2, " (advantages compare completions of one prompt; TRL requires >= 2)")
        for name in ("save_steps", "warmup_steps", "seed"):
            positive_int(name, 0)
        for name in ("max_prompt_length", "save_total_limit"):
            if getattr(self, name) is not None:
                positive_int(name)
        if not (isinstance(self.save_every_minutes, (int, float)) and 0 <= self.save_every_minutes < math.inf):
            raise ValueError(f"save_every_minutes must be a number >= 0 (0 = off), got {self.save_every_minutes!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature!r} (GRPO needs sampling: greedy groups "
                             "have no variance)")  # fmt: skip
        completions = self.prompts_per_step * self.num_generations
        if completions % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must divide prompts_per_step * num_generations = "
                f"{completions} (every micro-batch weighs the same in the accumulated loss)"
            )
        if "{prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{prompt}'")
        reference.check_loss_config(self.loss_type, self.importance_sampling_level, self.beta, self.epsilon,
                                    self.epsilon_high, self.delta, ref_logps_given=True,
                                    top_entropy_quantile=self.top_entropy_quantile,
                                    off_policy_mask_threshold=self.off_policy_mask_threshold,
                                    entropy_coef=self.entropy_coef)  # fmt: skip
        scale = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)
        if scale not in reference.SCALE_REWARDS:
            raise ValueError(f"scale_rewards must be one of {reference.SCALE_REWARDS}, got {self.scale_rewards!r}")
        if self.multi_objective_aggregation not in reference.MULTI_OBJECTIVE_AGGREGATIONS:
            raise ValueError(
                f"multi_objective_aggregation must be one of {reference.MULTI_OBJECTIVE_AGGREGATIONS}, "
                f"got {self.multi_objective_aggregation!r}"
            )
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
        if self.reward_weights is not None:
            self.reward_weights = [float(w) for w in self.reward_weights]
        # The sampling knobs are checked by SamplingParams, built here once so that a bad value fails now.
        self.sampling_params(seed=0)

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
    def from_dict(cls, values: dict[str, Any]) -> GRPOConfig:
        """A config from to_dict()'s output; TypeError for an unknown name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown GRPOConfig field(s) {unknown}")
        return cls(**values)


def _compared(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in RUN_LENGTH_KEYS}


def config_fingerprint(values: dict[str, Any]) -> str:
    """GRPOConfig.fingerprint of a to_dict() output (a checkpoint's config)."""
    text = json.dumps(_compared(values), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
