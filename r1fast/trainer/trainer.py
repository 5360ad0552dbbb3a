"""GRPOTrainer: prompts -> sampler -> rewards -> advantages -> fused loss -> optimizer, one step at a time."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TextIO

import torch

from r1fast import reference
from r1fast import rewards as reward_registry
from r1fast.loss import fused_linear_grpo_loss, fused_linear_logprobs
from r1fast.reference import group_advantages
from r1fast.sampler import Sampler
from r1fast.sampler.sampling import mix_seed
from r1fast.trainer import distributed, evaluation, fsdp, lora, validation
from r1fast.trainer.config import GRPOConfig
from r1fast.trainer.logging import MetricsLogger, gpu_stats
from r1fast.trainer.loop import TrainingLoop, enable_activation_checkpointing, make_optimizer
from r1fast.trainer.validation import InputError


@dataclass
class Rollout:
    """One generation batch: N = prompts * G completions, each prompt's G completions adjacent.

    prompt_ids / completion_ids: N token-id lists; finish_reasons: N of "stop" / "length"; texts: the decoded
    completions; rewards_per_func: [N, F] float32 (NaN where a reward skipped a completion); advantages: [N] float32.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    finish_reasons: list[str]
    texts: list[str]
    rewards_per_func: torch.Tensor
    advantages: torch.Tensor
    sampling_logps: list[list[float]] | None = None  # the sampler's log-prob of each completion token


@dataclass
class GenerationBatch:
    """What the num_iterations optimizer steps of one generation batch share: its micro-batches (see
    GRPOTrainer.micro_batches), and per micro-batch the old log-probs [b, T], the reference's [b, T] and the sampler
    correction's ratios (each list None when not used)."""

    batches: list[dict[str, torch.Tensor]]
    old: list[torch.Tensor] | None
    ref: list[torch.Tensor] | None
    ratios: list[torch.Tensor] | None

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor under a flat name ("<k>.<key>" of micro-batch k; "old.<k>", "ref.<k>", "ratios.<k>")."""
        out = {f"{k}.{key}": value for k, batch in enumerate(self.batches) for key, value in batch.items()}
        for name in ("old", "ref", "ratios"):
            out.update({f"{name}.{k}": value for k, value in enumerate(getattr(self, name) or [])})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], device: torch.device) -> GenerationBatch:
        """The inverse of tensors(), on `device`."""
        lists: dict[str, dict[int, torch.Tensor]] = {"old": {}, "ref": {}, "ratios": {}}
        batches: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            head, key = name.split(".", 1)
            if head in lists:
                lists[head][int(key)] = value.to(device)
            else:
                batches.setdefault(int(head), {})[key] = value.to(device)
        ordered = lambda d: [d[k] for k in sorted(d)] or None  # noqa: E731
        return cls(ordered(batches) or [], ordered(lists["old"]), ordered(lists["ref"]), ordered(lists["ratios"]))


class GRPOTrainer(TrainingLoop):
    """Trains a Hugging Face causal LM (llama, mistral, qwen2, qwen3) with GRPO on its own weights, in place.

    model: the policy; the sampler generates with its parameters in place (no copy, no weight sync).
    tokenizer: encode(text) -> ids, decode(ids, skip_special_tokens=True) -> text (a Hugging Face tokenizer works;
    apply_chat_template for chat prompts). reward_funcs: registered reward names (r1fast.rewards) or callables
    ``f(prompts=..., completions=..., completion_ids=..., **columns) -> list[float | None]``, called with keywords
    as TRL calls them. train_dataset: a sequence of
    dicts, each with "prompt" (a string, or chat messages) and any columns the rewards read (e.g. "solution").
    config: GRPOConfig. eval_dataset: held-out rows like train_dataset's, evaluated every config.eval_steps steps
    and after the last (evaluate). log_stream: where the console line or progress bar goes (None: silent). With
    beta > 0 the KL's reference is a frozen copy of the model as passed here (with LoRA: the model with its adapters
    disabled, no copy).

    LoRA: a peft.PeftModel trains its adapters; config.lora_r > 0 wraps the model with PEFT first (after every
    check). The sampler runs the base model with PEFT's LoRA layers in place (r1fast.trainer.lora). FSDP:
    config.fsdp shards the model over the process group (r1fast.trainer.fsdp); the rollout runs on the gathered
    weights (the whole model, or one layer at a time: config.fsdp_rollout_gather), checkpoints are sharded.

    Data parallel under torch.distributed (torchrun; call init_process_group and put the model on the rank's device
    first): every rank generates prompts_per_step prompts of its own (the global batch is world_size times that),
    advantages use every rank's rewards, gradients are averaged with TRL's normalisers, and rank 0 alone logs and
    writes checkpoints (output_dir must be shared for resume).

    Everything that can be checked is checked here, before any work: every dataset row (r1fast.trainer.validation),
    the config against the model and the rewards, the output folder. Raises InputError (a ValueError; a
    DatasetRowError names the row) or TypeError.
    """

    CHECKPOINT_FORMAT = "r1fast-grpo-1"

    @property
    def rows_per_step(self) -> int:
        return self.config.prompts_per_step

    @property
    def steps_per_batch(self) -> int:
        return self.config.num_iterations

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        reward_funcs: Sequence[str | Callable[..., list]],
        train_dataset: Sequence[dict[str, Any]],
        config: GRPOConfig | None = None,
        *,
        eval_dataset: Sequence[dict[str, Any]] | None = None,
        log_stream: TextIO | None = sys.stdout,
    ) -> None:
        self.config = config = config or GRPOConfig()
        if not isinstance(config, GRPOConfig):
            raise TypeError(f"config must be a GRPOConfig, got {type(config).__name__}")
        if not reward_funcs:
            raise InputError("reward_funcs is empty: GRPO needs at least one reward")
        self.reward_funcs = [reward_registry.get(f) if isinstance(f, str) else f for f in reward_funcs]
        for f in self.reward_funcs:
            if not callable(f):
                raise TypeError(f"a reward must be a registered name or a callable, got {f!r}")
        self.reward_names = evaluation.reward_names(reward_funcs)
        validation.check_output_dir(config.output_dir)
        validation.check_rows_shape(train_dataset)
        if eval_dataset is not None:
            validation.check_rows_shape(eval_dataset, "eval_dataset")
        if config.fsdp and not distributed.is_initialized():
            raise InputError("fsdp=True needs torch.distributed: run under torchrun (or call init_process_group first)")
        if config.lora_r and lora.is_peft_model(model):
            raise InputError("the model is a PeftModel already: pass it without lora_r (its adapters are trained)")
        if config.fsdp and lora.is_peft_model(model):
            raise InputError("fsdp with a PeftModel is not supported: LoRA runs on one GPU (or data parallel)")
        self.model, self.tokenizer, self.train_dataset = model, tokenizer, train_dataset
        self.eval_dataset = eval_dataset
        self.rank, self.world_size = distributed.rank_and_world()
        self.log_stream = log_stream if self.rank == 0 else None
        self.lm_head = model.get_output_embeddings()
        self.device = self.lm_head.weight.device
        try:
            self.sampler = Sampler(lora.base_model(model), tokenizer=tokenizer, block_size=config.sampler_block_size,
                                   kv_cache_memory=config.sampler_kv_cache_memory,
                                   fp32_head=config.fp32_lm_head)  # fmt: skip
        except ValueError as e:  # a model the sampler does not run, or a bad sampler setting
            raise InputError(str(e)) from None
        # The model's logit transform (r1fast.logit_transform), one reading for the sampler and the loss.
        self.logit_transform = self.sampler.runner.logit_transform.kwargs()
        validation.check_config_against_model(config, model, self.sampler.max_model_len, len(self.reward_funcs))
        report = validation.check_dataset(train_dataset, tokenizer, config, self.sampler.max_model_len,
                                          model.get_input_embeddings().weight.shape[0], self.reward_funcs,
                                          self.reward_names)  # fmt: skip
        if eval_dataset is not None:
            validation.check_dataset(eval_dataset, tokenizer, config, self.sampler.max_model_len,
                                     model.get_input_embeddings().weight.shape[0], self.reward_funcs,
                                     self.reward_names, name="eval_dataset")  # fmt: skip
        if report.truncated:
            self._say(f"{report.truncated} of {report.rows} prompts are longer than max_prompt_length="
                      f"{config.max_prompt_length} tokens: their first tokens are cut (as TRL does)")  # fmt: skip
        if config.lora_r:  # the checks passed: PEFT wraps the model (its Linear layers, in place; the base frozen)
            try:
                self.model = model = lora.apply_lora(model, config.lora_r, config.lora_alpha,
                                                     config.lora_target_modules, config.lora_dropout,
                                                     seed=config.seed)  # fmt: skip
            except ValueError as e:  # e.g. a target module the model does not have
                raise InputError(str(e)) from None
        distributed.broadcast_model(model)
        if config.gradient_checkpointing:
            enable_activation_checkpointing(model)
        # beta > 0: the KL is to the policy as given here (on resume too: build the trainer from the initial model,
        # then load the checkpoint), a frozen copy made now; with LoRA the base model, adapters disabled (no copy).
        copied = config.beta > 0 and not lora.is_peft_model(model)
        self.ref_model = copy.deepcopy(model).eval().requires_grad_(False) if copied else None
        if config.fsdp:  # after the broadcast: every rank shards the same weights
            for m in (model, self.ref_model):
                if m is not None:
                    fsdp.shard_model(m, config.fsdp_param_dtype)
        self.optimizer = make_optimizer(model, config)
        # A sharded model's rollout: the whole model gathered or its layers streamed ("auto": what fits, decided once
        # here, the same on every rank).
        self.rollout_gather = fsdp.rollout_gather_mode(
            config.fsdp_rollout_gather, model, self.sampler, config.fsdp_param_dtype,
            sequences=config.prompts_per_step * config.num_generations,
            tokens=(config.max_prompt_length or self.sampler.max_model_len) + config.max_completion_length)  # fmt: skip
        self.logger = MetricsLogger(config.output_dir if self.rank == 0 else None, self.log_stream,
                                    report_to=config.report_to if self.rank == 0 else "none",
                                    progress_bar=config.progress_bar(self.log_stream),
                                    run_config=config.to_dict())  # fmt: skip
        self.step = 0  # optimizer steps taken (TRL's global step); generation batch step // num_iterations
        # The generation batch that the next optimizer steps of this batch still use (num_iterations > 1).
        self.pending: GenerationBatch | None = None
        # The entropy bonus's coefficient (use_adaptive_entropy: the controller's state, with the entropy it measured
        # over the last optimizer step; inf before the first, as in TRL).
        self.entropy_coef, self.last_world_entropy = config.entropy_coef, math.inf

    # -- data -------------------------------------------------------------------------------------------------

    def rows_for_batch(self, batch: int) -> list[dict[str, Any]]:
        """This rank's dataset rows of generation batch `batch` (0-based): prompts_per_step rows (see
        TrainingLoop.rows_of_batch: a fresh permutation per epoch from the seed, so a resumed run sees the same
        rows)."""
        return self.rows_of_batch(batch, self.config.prompts_per_step)

    def _encode_prompt(self, row: dict[str, Any]) -> list[int]:
        return validation.encode_prompt(self.tokenizer, row, self.config, self.sampler.max_model_len)[0]

    # -- rollout ----------------------------------------------------------------------------------------------

    def rollout_weights(self) -> AbstractContextManager[fsdp.LayerStreamer | None]:
        """The context the sampler runs in: a sharded model's weights gathered for it, whole or layer by layer
        (self.rollout_gather; r1fast.trainer.fsdp.rollout_weights), freed after. Every rank enters."""
        return fsdp.rollout_weights(self.model, self.sampler.runner, self.rollout_gather, self.config.fsdp_param_dtype)

    @torch.no_grad()
    def generate(self, rows: list[dict[str, Any]], seed: int) -> Rollout:
        """Samples G completions per row, scores them with every reward and computes the advantages."""
        cfg, g = self.config, self.config.num_generations
        prompt_ids = [self._encode_prompt(row) for row in rows]
        with self.rollout_weights():
            groups = self.sampler.generate(prompt_ids, cfg.sampling_params(seed))
        if cfg.free_kv_cache:
            self.sampler.free()
        completions = [c for group in groups for c in group.completions]
        completion_ids = [c.token_ids for c in completions]
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in completion_ids]
        rewards_per_func = evaluation.score_completions(self.reward_funcs, rows, g, texts, completion_ids)
        advantages = self.advantages(rewards_per_func)
        return Rollout([list(group.prompt_token_ids) for group in groups for _ in range(g)], completion_ids,
                       [c.finish_reason for c in completions], texts, rewards_per_func, advantages,
                       [c.logprobs for c in completions])  # fmt: skip

    def advantages(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """This rank's advantages [N] from its rewards [N, F], computed over every rank's rewards (batch-level
        scaling and GDPO's normalisation see the whole global batch, as in TRL)."""
        cfg = self.config
        local = rewards_per_func.shape[0]
        everyone = distributed.all_gather_rows(rewards_per_func.to(self.device)).cpu()
        advantages = group_advantages(everyone, cfg.num_generations, reward_weights=cfg.reward_weights,
                                      scale_rewards=cfg.scale_rewards,
                                      multi_objective_aggregation=cfg.multi_objective_aggregation)  # fmt: skip
        return advantages[self.rank * local : (self.rank + 1) * local]

    # -- loss -------------------------------------------------------------------------------------------------

    def _micro_batch(self, rollout: Rollout, index: slice) -> dict[str, torch.Tensor]:
        """input ids [b, L] (prompt + completion, right-padded), positions [b, T] of the hidden states that predict
        the completion tokens, completion ids [b, T], mask [b, T] and the sampler's log-probs [b, T] float32 (0 on
        padding; T = the longest completion here)."""
        prompts, completions = rollout.prompt_ids[index], rollout.completion_ids[index]
        b = len(prompts)
        length = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
        t = max(max(len(c) for c in completions), 1)
        input_ids = torch.zeros(b, length, dtype=torch.int64)
        completion_ids = torch.zeros(b, t, dtype=torch.int64)
        mask = torch.zeros(b, t, dtype=torch.float32)
        positions = torch.zeros(b, t, dtype=torch.int64)
        sampling_logps = torch.zeros(b, t, dtype=torch.float32)
        sampled = rollout.sampling_logps[index] if rollout.sampling_logps is not None else [[]] * b
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            input_ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            completion_ids[i, : len(c)] = torch.tensor(c, dtype=torch.int64)
            mask[i, : len(c)] = 1.0
            sampling_logps[i, : len(sampled[i])] = torch.tensor(sampled[i], dtype=torch.float32)
            positions[i] = torch.arange(len(p) - 1, len(p) - 1 + t).clamp(max=length - 1)
        if self.config.mask_truncated_completions:
            truncated = torch.tensor([r == "length" for r in rollout.finish_reasons[index]])
            mask[truncated] = 0.0
        to = lambda x: x.to(self.device, non_blocking=True)  # noqa: E731
        return {"input_ids": to(input_ids), "positions": to(positions), "completion_ids": to(completion_ids),
                "mask": to(mask), "sampling_logps": to(sampling_logps)}  # fmt: skip

    def _completion_hidden(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The final hidden states [b, T, H] that predict the completion tokens (right padding needs no attention
        mask: under causal attention no real token sees a pad). A sharded model runs its root forward (FSDP gathers
        the head for the fused loss: r1fast.trainer.fsdp.forward_hidden)."""
        if fsdp.is_sharded(model):
            hidden = fsdp.forward_hidden(model, batch["input_ids"])
        else:
            hidden = model.get_decoder()(input_ids=batch["input_ids"], use_cache=False).last_hidden_state
        index = batch["positions"][..., None].expand(-1, -1, hidden.shape[-1])
        return hidden.gather(1, index)

    @torch.no_grad()
    def _logps(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        head = model.get_output_embeddings()
        logps = fused_linear_logprobs(self._completion_hidden(model, batch), head.weight, batch["completion_ids"],
                                      bias=head.bias, temperature=self.config.temperature,
                                      backend=self.config.loss_backend, fp32_head=self.config.fp32_lm_head,
                                      **self.logit_transform)  # fmt: skip
        if fsdp.is_sharded(model):  # no backward follows: free the root unit the forward left gathered
            model.reshard()
        return logps

    def micro_batches(self, rollout: Rollout) -> list[dict[str, torch.Tensor]]:
        """The rollout as micro-batches of micro_batch_size completions (see _micro_batch), each with its
        advantages [b]."""
        out, size = [], self.config.micro_batch_size
        for start in range(0, len(rollout.completion_ids), size):
            index = slice(start, start + size)
            batch = self._micro_batch(rollout, index)
            batch["advantages"] = rollout.advantages[index].to(self.device)
            out.append(batch)
        return out

    def loss_and_backward(self, batches: list[dict[str, torch.Tensor]], old_logps: list[torch.Tensor] | None,
                          ref_logps: list[torch.Tensor] | None,
                          is_ratios: list[torch.Tensor] | None = None) -> dict[str, float]:  # fmt: skip
        """Accumulates the gradient of the GRPO loss over a rollout's micro-batches (TRL's gradient-accumulation
        normalisers: each micro-batch's loss is divided by their count; dapo/cispo divide by the completion tokens
        of the whole generation batch, over all ranks, times the world size, since the gradients are then
        averaged). is_ratios: the sampler correction's ratio per micro-batch (then the sampler's log-probs feed the
        off-policy mask). With use_adaptive_entropy, the step applies the controller's coefficient and then moves it
        (TRL's controller, over every rank's tokens). Returns the summed loss and the loss metrics averaged over
        micro-batches (this rank's)."""
        cfg = self.config
        items = distributed.sum_over_ranks(float(sum(batch["mask"].sum().item() for batch in batches)), self.device)
        options = cfg.loss_options()
        if cfg.use_adaptive_entropy:
            options["entropy_coef"] = reference.applied_entropy_coef(self.entropy_coef, self.last_world_entropy,
                                                                     cfg.entropy_target)  # fmt: skip
        if self.world_size > 1 and cfg.top_entropy_quantile < 1.0:
            options["gather_entropies"] = distributed.all_gather_varlen
        total, sums, window = 0.0, {}, [0.0, 0.0]
        for k, batch in enumerate(batches):
            hidden = self._completion_hidden(self.model, batch)
            loss, metrics = fused_linear_grpo_loss(
                hidden, self.lm_head.weight, batch["completion_ids"], batch["mask"], batch["advantages"],
                None if old_logps is None else old_logps[k], None if ref_logps is None else ref_logps[k],
                None if is_ratios is None else batch["sampling_logps"], None if is_ratios is None else is_ratios[k],
                bias=self.lm_head.bias, backend=cfg.loss_backend, temperature=cfg.temperature, **self.logit_transform,
                fp32_head=cfg.fp32_lm_head,
                num_items_in_batch=items, gradient_accumulation_steps=len(batches),
                steps_per_generation=len(batches), num_processes=self.world_size,
                entropy_bonus_stats=cfg.use_adaptive_entropy, **options,
            )  # fmt: skip
            loss.backward()
            total += loss.item()
            if cfg.use_adaptive_entropy:
                window[0] += metrics.pop("entropy_bonus/sum")
                window[1] += metrics.pop("entropy_bonus/tokens")
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        if cfg.use_adaptive_entropy:
            entropy_sum, tokens = (distributed.sum_over_ranks(x, self.device) for x in window)
            self.last_world_entropy = entropy_sum / max(tokens, 1.0)
            self.entropy_coef = reference.adaptive_entropy_coef(
                self.entropy_coef, self.last_world_entropy, entropy_target=cfg.entropy_target,
                entropy_coef_delta=cfg.entropy_coef_delta, entropy_coef_min=cfg.entropy_coef_min,
                entropy_coef_max=cfg.entropy_coef_max,
            )  # fmt: skip
        out = {"loss": total, **{key: value / len(batches) for key, value in sums.items()}}
        if cfg.use_adaptive_entropy or cfg.entropy_coef != 0.0:
            out["entropy_coef"] = self.entropy_coef
        return out

    def extra_state(self) -> dict[str, Any]:
        """The entropy bonus's coefficient and the adaptive controller's last measurement (TRL saves the same)."""
        return {"entropy_coef": self.entropy_coef, "last_world_entropy": self.last_world_entropy}

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        if "entropy_coef" in state:  # a checkpoint from before the adaptive entropy bonus has none
            self.entropy_coef = float(state["entropy_coef"])
            self.last_world_entropy = float(state["last_world_entropy"])

    def importance_sampling_ratios(
        self, batches: list[dict[str, torch.Tensor]], old_logps: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], dict[str, float]]:
        """TRL's train/inference mismatch correction with the sampler in vLLM's part: per micro-batch the ratio
        pi_old / pi_sampler (reference.vllm_importance_sampling_ratio, the config's mode and clip bounds), and TRL's
        sampling/ metrics over the rollout (this rank's)."""
        cfg = self.config
        ratios, deltas, flat = [], [], []
        for batch, old in zip(batches, old_logps, strict=True):
            mask = batch["mask"]
            ratio = reference.vllm_importance_sampling_ratio(old, batch["sampling_logps"], mask,
                                                             cfg.vllm_importance_sampling_mode,
                                                             cfg.vllm_importance_sampling_clip_min,
                                                             cfg.vllm_importance_sampling_clip_max)  # fmt: skip
            ratios.append(ratio)
            deltas.append((old - batch["sampling_logps"]).abs()[mask.bool()])
            flat.append(ratio.flatten() if ratio.shape[1] == 1 else ratio[mask.bool()])
        delta, flat_ratio = torch.cat(deltas), torch.cat(flat)
        stat = lambda x, fn: fn(x).item() if x.numel() else 0.0  # noqa: E731
        return ratios, {
            "sampling/sampling_logp_difference/mean": stat(delta, torch.mean),
            "sampling/sampling_logp_difference/max": stat(delta, torch.max),
            "sampling/importance_sampling_ratio/min": stat(flat_ratio, torch.min),
            "sampling/importance_sampling_ratio/mean": stat(flat_ratio, torch.mean),
            "sampling/importance_sampling_ratio/max": stat(flat_ratio, torch.max),
        }

    # -- the step ---------------------------------------------------------------------------------------------

    def prepare_batch(self) -> tuple[GenerationBatch, dict[str, float]]:
        """Generation batch step // num_iterations: its rollout as micro-batches, with the old, reference and
        sampler-correction inputs its num_iterations optimizer steps share. Returns it and the rollout's metrics
        (rewards, lengths, sampling/, time/generate: the rollout's seconds)."""
        cfg = self.config
        batch_index = self.step // cfg.num_iterations
        start = time.perf_counter()
        rows = self.rows_for_batch(batch_index)
        self.model.eval()  # old log-probs without dropout (the sampler's forward has none)
        rollout = self.generate(rows, seed=mix_seed(cfg.seed, batch_index, 1 + self.rank))
        generated = time.perf_counter()
        batches = self.micro_batches(rollout)
        # Old log-probs: the policy before the first update (with one iteration and no sampler correction the loss
        # is on-policy: ratio 1, old = the loss's own log-probs).
        correct = cfg.vllm_importance_sampling_correction
        old = [self._logps(self.model, b) for b in batches] if cfg.num_iterations > 1 or correct else None
        ratios, metrics = self.importance_sampling_ratios(batches, old) if correct else (None, {})
        ref = None
        if cfg.beta > 0:  # the reference: the frozen copy, or with LoRA the model with its adapters disabled
            with lora.adapters_disabled(self.model):
                ref = [self._logps(self.model if self.ref_model is None else self.ref_model, b) for b in batches]
        metrics.update(self._rollout_metrics(rollout))
        metrics["time/generate"] = generated - start
        return GenerationBatch(batches, old, ref, ratios), metrics

    def train_step(self) -> dict[str, float]:
        """One optimizer step (TRL's step): the first of a generation batch's num_iterations steps generates it
        (prepare_batch), the others reuse it. Returns the step's metrics (the rollout's on a generating step only,
        as TRL logs them)."""
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        if self.pending is None:
            self.pending, metrics = self.prepare_batch()
        batch = self.pending
        self.model.train()  # as TRL: dropout (if the config has any) and gradient checkpointing (if enabled) apply
        lr = self.set_learning_rate(self.total_steps)
        self.optimizer.zero_grad(set_to_none=True)
        metrics.update(self.loss_and_backward(batch.batches, batch.old, batch.ref, batch.ratios))
        metrics["grad_norm"] = self.optimizer_step()
        metrics["learning_rate"] = lr
        self.model.eval()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step % self.config.num_iterations == 0:  # the batch's last optimizer step
            self.pending = None
        metrics["step_time"] = time.perf_counter() - start
        metrics["time/train"] = metrics["step_time"] - metrics.get("time/generate", 0.0)
        metrics.update(gpu_stats(self.device))
        return distributed.reduce_metrics(metrics, self.device)

    def rank_state(self) -> dict[str, torch.Tensor] | None:
        """The generation batch whose remaining optimizer steps come after this checkpoint (this rank's), if any."""
        return None if self.pending is None else self.pending.tensors()

    def restore_rank_state(self, tensors: dict[str, torch.Tensor] | None, same_world: bool) -> None:
        """The generation batch a checkpoint written between two of its optimizer steps saved; when it saved none
        for this rank (another world size), the batch is generated again from the current weights, with a warning:
        the run then differs from the uninterrupted one."""
        self.pending = None
        if self.step % self.config.num_iterations == 0:
            return
        if tensors is not None and same_world:
            self.pending = GenerationBatch.from_tensors(tensors, self.device)
        else:
            self._say(f"the checkpoint at step {self.step} lies inside a generation batch and holds no rollout of this "
                      "rank (it was written by another number of ranks): the batch is generated again from the "
                      "current weights, so the run differs from the uninterrupted one")

    def _rollout_metrics(self, rollout: Rollout) -> dict[str, float]:
        return evaluation.rollout_metrics(rollout.rewards_per_func, self.reward_names, self.config.reward_weights,
                                          self.config.num_generations, rollout.completion_ids,
                                          rollout.finish_reasons)  # fmt: skip

    def evaluate(self) -> dict[str, float]:
        """The rewards' means (and TRL's other rollout metrics, and each mean's 95% interval) over eval_dataset's
        rows, with config.eval_sampling_params() (greedy, one completion per row, by default): see
        r1fast.trainer.evaluation.evaluate. The training's random state is not touched."""
        if self.eval_dataset is None:
            raise InputError("no eval_dataset was given")
        self.model.eval()
        with self.rollout_weights():
            return evaluation.evaluate(self.model, self.tokenizer, self.eval_dataset, self.reward_funcs, self.config,
                                       sampler=self.sampler, names=self.reward_names).metrics  # fmt: skip

    # -- the loop and checkpoints -----------------------------------------------------------------------------
