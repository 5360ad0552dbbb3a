"""GRPOTrainer: prompts -> sampler -> rewards -> advantages -> fused loss -> optimizer, one step at a time."""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from r1fast import rewards as reward_registry
from r1fast.loss import fused_linear_grpo_loss, fused_linear_logprobs
from r1fast.reference import group_advantages
from r1fast.sampler import Sampler
from r1fast.sampler.sampling import mix_seed
from r1fast.trainer import checkpoint, distributed, validation
from r1fast.trainer.config import GRPOConfig
from r1fast.trainer.logging import MetricsLogger, gpu_stats
from r1fast.trainer.signals import StopRequest
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


def _enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Hugging Face's non-reentrant activation checkpointing of every decoder layer (transformers >= 5.x names it
    activation_checkpointing_enable; earlier releases gradient_checkpointing_enable)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _lr_factor(config: GRPOConfig, step: int) -> float:
    """The learning-rate multiplier at optimizer step `step` (0-based): linear warmup from 0, then the schedule
    (HF's semantics for constant/linear/cosine with warmup)."""
    if step < config.warmup_steps:
        return step / config.warmup_steps
    if config.lr_scheduler_type == "constant":
        return 1.0
    remaining = max(1, config.max_steps * config.num_iterations - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / remaining)
    if config.lr_scheduler_type == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class GRPOTrainer:
    """Trains a Hugging Face causal LM (llama, mistral, qwen2, qwen3) with GRPO on its own weights, in place.

    model: the policy; the sampler generates with its parameters in place (no copy, no weight sync).
    tokenizer: encode(text) -> ids, decode(ids, skip_special_tokens=True) -> text (a Hugging Face tokenizer works;
    apply_chat_template for chat prompts). reward_funcs: registered reward names (r1fast.rewards) or callables
    ``f(prompts=..., completions=..., completion_ids=..., **columns) -> list[float | None]``, called with keywords
    as TRL calls them. train_dataset: a sequence of
    dicts, each with "prompt" (a string, or chat messages) and any columns the rewards read (e.g. "solution").
    config: GRPOConfig. log_stream: where the console line goes (None: silent). With beta > 0 the KL's reference
    is a frozen copy of the model as passed here.

    Data parallel under torch.distributed (torchrun; call init_process_group and put the model on the rank's device
    first): every rank generates prompts_per_step prompts of its own (the global batch is world_size times that),
    advantages use every rank's rewards, gradients are averaged with TRL's normalisers, and rank 0 alone logs and
    writes checkpoints (output_dir must be shared for resume).

    Everything that can be checked is checked here, before any work: every dataset row (r1fast.trainer.validation),
    the config against the model and the rewards, the output folder. Raises InputError (a ValueError; a
    DatasetRowError names the row) or TypeError.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        reward_funcs: Sequence[str | Callable[..., list]],
        train_dataset: Sequence[dict[str, Any]],
        config: GRPOConfig | None = None,
        *,
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
        self.reward_names = [f if isinstance(f, str) else getattr(f, "__name__", f"reward{i}")
                             for i, f in enumerate(reward_funcs)]  # fmt: skip
        validation.check_output_dir(config.output_dir)
        validation.check_rows_shape(train_dataset)
        self.model, self.tokenizer, self.train_dataset = model, tokenizer, train_dataset
        self.rank, self.world_size = distributed.rank_and_world()
        self.log_stream = log_stream if self.rank == 0 else None
        self.lm_head = model.get_output_embeddings()
        self.device = self.lm_head.weight.device
        try:
            self.sampler = Sampler(model, tokenizer=tokenizer, block_size=config.sampler_block_size,
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
        if report.truncated:
            self._say(f"{report.truncated} of {report.rows} prompts are longer than max_prompt_length="
                      f"{config.max_prompt_length} tokens: their first tokens are cut (as TRL does)")  # fmt: skip
        distributed.broadcast_model(model)
        if config.gradient_checkpointing:
            _enable_activation_checkpointing(model)
        # beta > 0: the KL is to the policy as given here (on resume too: build the trainer from the initial model,
        # then load the checkpoint), a frozen copy made now.
        self.ref_model = copy.deepcopy(model).eval().requires_grad_(False) if config.beta > 0 else None
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise InputError("the model has no trainable parameters")
        betas = (config.adam_beta1, config.adam_beta2)
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=betas, eps=config.adam_epsilon,
                                           weight_decay=config.weight_decay)  # fmt: skip
        self.logger = MetricsLogger(config.output_dir if self.rank == 0 else None, self.log_stream)
        self.step = 0  # optimizer steps taken = config.num_iterations * steps_done
        self._perm: list[int] = []
        self._perm_epoch = -1

    # -- data -------------------------------------------------------------------------------------------------

    def rows_for_batch(self, batch: int) -> list[dict[str, Any]]:
        """This rank's dataset rows of generation batch `batch` (0-based): consecutive slices of a fresh permutation
        per epoch, drawn from (seed, epoch) alone, so a resumed run sees the same rows; rank r takes the r-th
        prompts_per_step of the batch's world_size * prompts_per_step."""
        n, k = len(self.train_dataset), self.config.prompts_per_step
        first = (batch * self.world_size + self.rank) * k
        rows = []
        for position in range(first, first + k):
            epoch, offset = divmod(position, n)
            rows.append(self.train_dataset[self._permutation(epoch)[offset]])
        return rows

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm_epoch != epoch:
            generator = torch.Generator().manual_seed(mix_seed(self.config.seed, epoch))
            self._perm = torch.randperm(len(self.train_dataset), generator=generator).tolist()
            self._perm_epoch = epoch
        return self._perm

    def _encode_prompt(self, row: dict[str, Any]) -> list[int]:
        return validation.encode_prompt(self.tokenizer, row, self.config, self.sampler.max_model_len)[0]

    # -- rollout ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, rows: list[dict[str, Any]], seed: int) -> Rollout:
        """Samples G completions per row, scores them with every reward and computes the advantages."""
        cfg, g = self.config, self.config.num_generations
        prompt_ids = [self._encode_prompt(row) for row in rows]
        groups = self.sampler.generate(prompt_ids, cfg.sampling_params(seed))
        if cfg.free_kv_cache:
            self.sampler.free()
        completions = [c for group in groups for c in group.completions]
        completion_ids = [c.token_ids for c in completions]
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in completion_ids]
        columns: dict[str, list[Any]] = {"completion_ids": completion_ids}
        for key in dict.fromkeys(k for row in rows for k in row if k != "prompt"):  # every column, in order
            columns[key] = [row.get(key) for row in rows for _ in range(g)]
        prompts = [row["prompt"] for row in rows for _ in range(g)]
        per_function, _ = reward_registry.score(self.reward_funcs, prompts, texts, **columns)
        rewards_per_func = torch.tensor([[math.nan if v is None else v for v in row] for row in per_function],
                                        dtype=torch.float32).reshape(len(texts), len(self.reward_funcs))  # fmt: skip
        advantages = self.advantages(rewards_per_func)
        return Rollout([list(group.prompt_token_ids) for group in groups for _ in range(g)], completion_ids,
                       [c.finish_reason for c in completions], texts, rewards_per_func, advantages)  # fmt: skip

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
        the completion tokens, completion ids [b, T] and mask [b, T] (T = the longest completion here)."""
        prompts, completions = rollout.prompt_ids[index], rollout.completion_ids[index]
        b = len(prompts)
        length = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
        t = max(max(len(c) for c in completions), 1)
        input_ids = torch.zeros(b, length, dtype=torch.int64)
        completion_ids = torch.zeros(b, t, dtype=torch.int64)
        mask = torch.zeros(b, t, dtype=torch.float32)
        positions = torch.zeros(b, t, dtype=torch.int64)
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            input_ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            completion_ids[i, : len(c)] = torch.tensor(c, dtype=torch.int64)
            mask[i, : len(c)] = 1.0
            positions[i] = torch.arange(len(p) - 1, len(p) - 1 + t).clamp(max=length - 1)
        if self.config.mask_truncated_completions:
            truncated = torch.tensor([r == "length" for r in rollout.finish_reasons[index]])
            mask[truncated] = 0.0
        to = lambda x: x.to(self.device, non_blocking=True)  # noqa: E731
        return {"input_ids": to(input_ids), "positions": to(positions), "completion_ids": to(completion_ids),
                "mask": to(mask)}  # fmt: skip

    def _completion_hidden(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The final hidden states [b, T, H] that predict the completion tokens (right padding needs no attention
        mask: under causal attention no real token sees a pad)."""
        hidden = model.get_decoder()(input_ids=batch["input_ids"], use_cache=False).last_hidden_state
        index = batch["positions"][..., None].expand(-1, -1, hidden.shape[-1])
        return hidden.gather(1, index)

    @torch.no_grad()
    def _logps(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        head = model.get_output_embeddings()
        return fused_linear_logprobs(self._completion_hidden(model, batch), head.weight, batch["completion_ids"],
                                     bias=head.bias, temperature=self.config.temperature,
                                     backend=self.config.loss_backend, fp32_head=self.config.fp32_lm_head,
                                     **self.logit_transform)  # fmt: skip

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
                          ref_logps: list[torch.Tensor] | None) -> dict[str, float]:  # fmt: skip
        """Accumulates the gradient of the GRPO loss over a rollout's micro-batches (TRL's gradient-accumulation
        normalisers: each micro-batch's loss is divided by their count; dapo/cispo divide by the completion tokens
        of the whole generation batch, over all ranks, times the world size, since the gradients are then
        averaged). Returns the summed loss and the loss metrics averaged over micro-batches (this rank's)."""
        cfg = self.config
        items = distributed.sum_over_ranks(float(sum(batch["mask"].sum().item() for batch in batches)), self.device)
        total, sums = 0.0, {}
        for k, batch in enumerate(batches):
            hidden = self._completion_hidden(self.model, batch)
            loss, metrics = fused_linear_grpo_loss(
                hidden, self.lm_head.weight, batch["completion_ids"], batch["mask"], batch["advantages"],
                None if old_logps is None else old_logps[k], None if ref_logps is None else ref_logps[k],
                bias=self.lm_head.bias, backend=cfg.loss_backend, temperature=cfg.temperature, **self.logit_transform,
                fp32_head=cfg.fp32_lm_head,
                num_items_in_batch=items, gradient_accumulation_steps=len(batches),
                steps_per_generation=len(batches), num_processes=self.world_size, **cfg.loss_options(),
            )  # fmt: skip
            loss.backward()
            total += loss.item()
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        return {"loss": total, **{key: value / len(batches) for key, value in sums.items()}}

    # -- the step ---------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One generation batch and its num_iterations optimizer steps. Returns the step's metrics."""
        cfg = self.config
        batch_index = self.step // cfg.num_iterations
        start = time.perf_counter()
        rows = self.rows_for_batch(batch_index)
        self.model.eval()  # old log-probs without dropout (the sampler's forward has none)
        rollout = self.generate(rows, seed=mix_seed(cfg.seed, batch_index, 1 + self.rank))
        generated = time.perf_counter()
        batches = self.micro_batches(rollout)
        # Old log-probs: the policy before the first update (with one iteration the loss is on-policy: ratio 1).
        old = [self._logps(self.model, b) for b in batches] if cfg.num_iterations > 1 else None
        ref = None if self.ref_model is None else [self._logps(self.ref_model, b) for b in batches]
        metrics: dict[str, float] = {}
        self.model.train()  # as TRL: dropout (if the config has any) and gradient checkpointing (if enabled) apply
        for _ in range(cfg.num_iterations):
            lr = cfg.learning_rate * _lr_factor(cfg, self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            metrics = self.loss_and_backward(batches, old, ref)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            distributed.average_gradients(params)
            clip = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip))
            metrics["learning_rate"] = lr
            self.optimizer.step()
            self.step += 1
        self.model.eval()
        self.optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        metrics.update(self._rollout_metrics(rollout))
        metrics.update({"time/generate": generated - start, "time/train": end - generated, "step_time": end - start})
        metrics.update(gpu_stats(self.device))
        return distributed.reduce_metrics(metrics, self.device)

    def _rollout_metrics(self, rollout: Rollout) -> dict[str, float]:
        g = self.config.num_generations
        rpf = rollout.rewards_per_func
        weights = torch.tensor(self.config.reward_weights or [1.0] * rpf.shape[1])
        total = torch.nansum(rpf * weights, dim=1)
        groups = total.view(-1, g)
        lengths = torch.tensor([len(c) for c in rollout.completion_ids], dtype=torch.float32)
        out = {
            "reward": total.mean().item(),
            "reward_std": groups.std(dim=1).mean().item() if g > 1 else 0.0,
            "frac_reward_zero_std": (groups.std(dim=1) == 0).float().mean().item() if g > 1 else 1.0,
            "completions/mean_length": lengths.mean().item(),
            "completions/min_length": lengths.min().item(),
            "completions/max_length": lengths.max().item(),
            "completions/clipped_ratio": sum(r == "length" for r in rollout.finish_reasons) / len(lengths),
            "tokens/generated": lengths.sum().item(),
        }
        for name, column in zip(self.reward_names, rpf.T, strict=True):
            scored = column[~column.isnan()]
            out[f"rewards/{name}/mean"] = scored.mean().item() if len(scored) else math.nan
            out[f"rewards/{name}/std"] = scored.std().item() if len(scored) > 1 else math.nan
        return out

    # -- the loop and checkpoints -----------------------------------------------------------------------------

    @property
    def steps_done(self) -> int:
        """Steps (generation batches) completed: what metrics.jsonl and checkpoint names count."""
        return self.step // self.config.num_iterations

    def train(self, resume_from: str | os.PathLike | None = None, *, overwrite: bool = False,
              allow_config_change: bool = False,
              export_dir: str | os.PathLike | None = None) -> list[dict[str, float]]:  # fmt: skip
        """Runs the steps up to config.max_steps (generation batches, each with num_iterations optimizer steps).

        resume_from: None (a fresh start), "latest" (the newest checkpoint under output_dir whose manifest
        verifies; newer ones that do not verify are named in a CheckpointWarning; a fresh start when there is none)
        or a checkpoint folder. A fresh start into an output_dir that holds a previous run raises InputError unless
        overwrite (which deletes its checkpoints, final export and metrics). A checkpoint whose config differs from
        this one (RUN_LENGTH_KEYS aside) raises InputError unless allow_config_change. On resume metrics.jsonl is
        cut back to the checkpoint's step, so no step appears twice.

        Logs every logging_steps steps; with output_dir saves every save_steps steps, every save_every_minutes
        minutes and at the end, keeping save_total_limit; at the end exports the model, its config and the
        tokenizer to export_dir (default <output_dir>/final). SIGINT/SIGTERM: the current step finishes, a
        checkpoint is written and train returns; a second signal raises KeyboardInterrupt at once. Under
        torch.distributed rank 0 decides where to start and writes; every rank loads the same checkpoint and stops
        after the same step. Returns the logged metrics, one dict per logged step."""
        cfg = self.config
        if resume_from is not None and overwrite:
            raise InputError("resume_from and overwrite exclude each other")
        start = distributed.on_rank0(lambda: self._choose_start(resume_from, overwrite, allow_config_change))
        if start is not None:
            self.load(start, verify=False)  # rank 0 verified it
            self._say(f"resumed from {start} at step {self.steps_done}")
            if self.steps_done >= cfg.max_steps:
                self._say(f"the run is finished: {start.name} is at step {self.steps_done} and max_steps="
                          f"{cfg.max_steps} (raise max_steps to train further)")  # fmt: skip
        if self.rank == 0:
            self.logger.truncate(self.steps_done)
        history = []
        last_save, saved_step = time.monotonic(), self.steps_done if start is not None else None
        with StopRequest() as stop:
            while self.steps_done < cfg.max_steps:
                metrics = self.train_step()
                step = self.steps_done
                if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                    self.logger.log(step, metrics)
                    history.append({"step": step, **metrics})
                minutes = (time.monotonic() - last_save) / 60
                (overdue,) = distributed.any_rank([0 < cfg.save_every_minutes <= minutes], self.device)
                periodic = cfg.save_steps and step % cfg.save_steps == 0
                if cfg.output_dir and (overdue or periodic or step == cfg.max_steps):
                    self.save()
                    last_save, saved_step = time.monotonic(), step
                (stopping,) = distributed.any_rank([stop.signal_name is not None], self.device)
                if stopping:
                    self._stop(stop.signal_name, saved=saved_step == step)
                    return history
        export = Path(export_dir) if export_dir else (Path(cfg.output_dir) / checkpoint.FINAL_DIR if cfg.output_dir
                                                      else None)  # fmt: skip
        if export is not None and distributed.on_rank0(lambda: checkpoint.verified_step(export)) != self.steps_done:
            self.export(export)
            self._say(f"step {self.steps_done} of {cfg.max_steps} done: the model, its config and tokenizer are in "
                      f"{export} (from_pretrained loads it)")  # fmt: skip
        return history

    def _stop(self, signal_name: str | None, saved: bool) -> None:
        """After a stop signal: a checkpoint of the step just finished (unless written already), and one line."""
        if not self.config.output_dir:
            self._say(f"stopped by {signal_name or 'a signal'} after step {self.steps_done}; nothing saved (no "
                      "output_dir)")  # fmt: skip
            return
        path = checkpoint.checkpoint_dir(self.config.output_dir, self.steps_done)
        if not saved:
            path = self.save()
        self._say(f"stopped by {signal_name or 'a signal to another rank'} after step {self.steps_done}: saved "
                  f"{path} (continue with --resume latest)")  # fmt: skip

    def _choose_start(self, resume_from: str | os.PathLike | None, overwrite: bool,
                      allow_config_change: bool) -> Path | None:  # fmt: skip
        """Where the run starts, decided on rank 0: None (step 0) or a checkpoint that verifies. Finishes saves a
        crash interrupted; clears the previous run when overwrite. Raises InputError (see train)."""
        cfg = self.config
        out = Path(cfg.output_dir) if cfg.output_dir else None
        if out is not None:
            for path in checkpoint.finish_interrupted_saves(out):
                self._say(f"completed {path}, whose save was interrupted after it was written")
        if resume_from is None:
            previous = self._previous_run()
            if previous and not overwrite:
                names = ", ".join(p.name for p in previous[:3]) + (", ..." if len(previous) > 3 else "")
                raise InputError(f"{out} already holds a run ({names}): continue it with --resume latest "
                                 "(resume_from='latest') or replace it with --overwrite (overwrite=True)")  # fmt: skip
            for path in previous:
                checkpoint.remove_checkpoint(path) if path.is_dir() else path.unlink()
            return None
        if resume_from == "latest":
            if out is None:
                raise InputError("resume_from='latest' needs config.output_dir")
            path = checkpoint.latest_checkpoint(out)
            if path is None:
                self._say(f"no checkpoint to resume from in {out}: starting at step 0")
                return None
        else:
            path = Path(resume_from)
            checkpoint.verify_checkpoint(path)
        manifest, state = checkpoint.read_checkpoint_info(path)
        if manifest.get("config_hash") != cfg.fingerprint():
            theirs = state.get("config", {})
            changed = ", ".join(f"{k} {theirs.get(k)!r} -> {getattr(cfg, k, None)!r}" for k in cfg.changed_keys(theirs))
            if not allow_config_change:
                raise InputError(f"{path} was trained with another config ({changed}): resume with its config, or "
                                 "pass --allow-config-change (allow_config_change=True)")  # fmt: skip
            self._say(f"resuming {path} with a changed config: {changed}")
        if state.get("world_size", self.world_size) != self.world_size:
            self._say(f"{path} was trained on {state['world_size']} ranks, this run has {self.world_size}: the rows "
                      "each step sees differ from the uninterrupted run's")  # fmt: skip
        return path

    def _previous_run(self) -> list[Path]:
        """What a previous run left in output_dir: checkpoints, the final export, metrics.jsonl."""
        out = Path(self.config.output_dir) if self.config.output_dir else None
        if out is None:
            return []
        found = [path for _, path in checkpoint.checkpoint_steps(out)]
        found += [p for p in (out / checkpoint.FINAL_DIR, out / "metrics.jsonl") if p.exists()]
        return found

    def _say(self, message: str) -> None:
        """One line to the console stream (rank 0's)."""
        if self.log_stream is not None:
            print(message, file=self.log_stream, flush=True)

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Writes a checkpoint atomically (default: <output_dir>/checkpoint-<steps_done>, and then the oldest beyond
        save_total_limit are removed); under torch.distributed rank 0 writes it and every rank waits for it."""
        cfg = self.config
        default = path is None
        if default:
            if not cfg.output_dir:
                raise ValueError("no path given and config.output_dir is not set")
            path = checkpoint.checkpoint_dir(cfg.output_dir, self.steps_done)
        self._write(Path(path), self.optimizer)
        if default and cfg.save_total_limit and self.rank == 0:
            checkpoint.rotate_checkpoints(cfg.output_dir, cfg.save_total_limit, self.steps_done)
        return Path(path)

    def export(self, path: str | os.PathLike) -> Path:
        """Writes the model, its config, generation config and the tokenizer (no optimizer) atomically to path, a
        folder AutoModelForCausalLM.from_pretrained loads."""
        return self._write(Path(path), None)

    def _write(self, path: Path, optimizer: torch.optim.Optimizer | None) -> Path:
        state = {"step": self.step, "config": self.config.to_dict(), "format": "r1fast-grpo-1",
                 "world_size": self.world_size}  # fmt: skip
        if self.rank == 0:
            checkpoint.save_checkpoint(path, self.model, optimizer, state, step=self.steps_done,
                                       config_hash=self.config.fingerprint(), tokenizer=self.tokenizer)  # fmt: skip
        distributed.barrier()
        return path

    def load(self, path: str | os.PathLike, *, verify: bool = True) -> None:
        """Restores the model, optimizer and step from a checkpoint written by save() (the dataset order and the
        sampling seeds follow from the config's seed and the step, so the run continues as if never stopped).
        verify: check the manifest's sizes and checksums first. Raises CheckpointError."""
        state = checkpoint.load_checkpoint(path, self.model, self.optimizer, verify=verify)
        if state.get("format") != "r1fast-grpo-1":
            raise checkpoint.CheckpointError(f"{path} is not an r1fast GRPO checkpoint")
        self.step = int(state["step"])
