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
from r1fast.trainer import distributed
from r1fast.trainer.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from r1fast.trainer.config import GRPOConfig
from r1fast.trainer.logging import MetricsLogger, gpu_stats


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


def _prompt_ids(tokenizer: Any, prompt: Any, template: str) -> list[int]:
    """A dataset prompt as token ids, as TRL tokenizes it: a string goes into the template and through
    ``tokenizer.encode`` (special tokens included, e.g. a BOS); a chat (a list of {"role", "content"} messages)
    through the tokenizer's chat template with the generation prompt (the template is not used)."""
    if isinstance(prompt, str):
        return list(tokenizer.encode(template.replace("{prompt}", prompt)))
    if isinstance(prompt, Sequence) and prompt and all(isinstance(m, dict) for m in prompt):
        out = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True,
                                            return_dict=True)  # fmt: skip
        return list(out["input_ids"])
    raise TypeError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


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
    Raises TypeError / ValueError on a bad model, dataset, reward list or config.
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
        if config.temperature <= 0:
            raise ValueError("GRPO needs sampling: temperature must be > 0 (greedy groups have no variance)")
        if not reward_funcs:
            raise ValueError("reward_funcs is empty: GRPO needs at least one reward")
        self.reward_funcs = [reward_registry.get(f) if isinstance(f, str) else f for f in reward_funcs]
        for f in self.reward_funcs:
            if not callable(f):
                raise TypeError(f"a reward must be a registered name or a callable, got {f!r}")
        self.reward_names = [f if isinstance(f, str) else getattr(f, "__name__", f"reward{i}")
                             for i, f in enumerate(reward_funcs)]  # fmt: skip
        if config.reward_weights is not None and len(config.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"{len(config.reward_weights)} reward_weights for {len(self.reward_funcs)} rewards")
        if len(train_dataset) == 0:
            raise ValueError("train_dataset is empty")
        for i in range(min(len(train_dataset), 3)):  # the first rows are checked now, the rest as they come
            if not isinstance(train_dataset[i], dict) or "prompt" not in train_dataset[i]:
                raise ValueError(f"train_dataset[{i}] must be a dict with a 'prompt' column")
        self.model, self.tokenizer, self.train_dataset = model, tokenizer, train_dataset
        self.rank, self.world_size = distributed.rank_and_world()
        distributed.broadcast_model(model)
        self.lm_head = model.get_output_embeddings()
        self.device = self.lm_head.weight.device
        self.sampler = Sampler(model, tokenizer=tokenizer, block_size=config.sampler_block_size,
                               kv_cache_memory=config.sampler_kv_cache_memory)  # fmt: skip
        if config.max_completion_length >= self.sampler.max_model_len:
            raise ValueError(f"max_completion_length={config.max_completion_length} leaves no room for a prompt "
                             f"in max_model_len={self.sampler.max_model_len}")  # fmt: skip
        if config.gradient_checkpointing:
            _enable_activation_checkpointing(model)
        # beta > 0: the KL is to the policy as given here (on resume too: build the trainer from the initial model,
        # then load the checkpoint), a frozen copy made now.
        self.ref_model = copy.deepcopy(model).eval().requires_grad_(False) if config.beta > 0 else None
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        betas = (config.adam_beta1, config.adam_beta2)
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=betas, eps=config.adam_epsilon,
                                           weight_decay=config.weight_decay)  # fmt: skip
        main = self.rank == 0
        self.logger = MetricsLogger(config.output_dir if main else None, log_stream if main else None)
        self.step = 0  # optimizer steps taken = config.num_iterations * generation batches
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
        if not isinstance(row, dict) or "prompt" not in row:
            raise ValueError(f"every dataset row must be a dict with a 'prompt' column, got {row!r:.80}")
        ids = _prompt_ids(self.tokenizer, row["prompt"], self.config.prompt_template)
        limit = self.config.max_prompt_length
        if limit is not None and len(ids) > limit:
            ids = ids[-limit:]  # from the left, as TRL truncates
        room = self.sampler.max_model_len - self.config.max_completion_length
        if len(ids) > room:
            raise ValueError(f"a prompt of {len(ids)} tokens does not fit max_model_len={self.sampler.max_model_len} "
                             f"with max_completion_length={self.config.max_completion_length}; set max_prompt_length")
        if not ids:
            raise ValueError(f"prompt {row['prompt']!r:.60} tokenizes to nothing")
        return ids

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
                                     backend=self.config.loss_backend)  # fmt: skip

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
                bias=self.lm_head.bias, backend=cfg.loss_backend, temperature=cfg.temperature,
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

    def train(self, resume_from: str | os.PathLike | None = None) -> list[dict[str, float]]:
        """Runs config.max_steps steps (generation batches, each with num_iterations optimizer steps).

        resume_from: a checkpoint directory, or "latest" (the newest under output_dir; a fresh start when there is
        none). Logs every logging_steps steps, saves every save_steps steps and at the end (when output_dir is
        set). Returns the logged metrics, one dict per logged step."""
        cfg = self.config
        if resume_from == "latest":
            path = latest_checkpoint(cfg.output_dir) if cfg.output_dir else None
            if path is not None:
                self.load(path)
        elif resume_from is not None:
            self.load(resume_from)
        history = []
        while self.step // cfg.num_iterations < cfg.max_steps:
            metrics = self.train_step()
            batch = self.step // cfg.num_iterations
            if batch % cfg.logging_steps == 0 or batch == cfg.max_steps:
                self.logger.log(batch, metrics)
                history.append({"step": batch, **metrics})
            if cfg.output_dir and (cfg.save_steps and batch % cfg.save_steps == 0 or batch == cfg.max_steps):
                self.save()
        return history

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Writes a checkpoint (default: <output_dir>/checkpoint-<batch>); under torch.distributed rank 0 writes it
        and every rank waits for it."""
        if path is None:
            if not self.config.output_dir:
                raise ValueError("no path given and config.output_dir is not set")
            path = checkpoint_dir(self.config.output_dir, self.step // self.config.num_iterations)
        state = {"step": self.step, "config": self.config.to_dict(), "format": "r1fast-grpo-1",
                 "world_size": self.world_size}  # fmt: skip
        if self.rank == 0:
            save_checkpoint(path, self.model, self.optimizer, state)
        distributed.barrier()
        return Path(path)

    def load(self, path: str | os.PathLike) -> None:
        """Restores the model, optimizer and step from a checkpoint written by save() (the dataset order and the
        sampling seeds follow from the config's seed and the step, so the run continues as if never stopped)."""
        state = load_checkpoint(path, self.model, self.optimizer)
        if state.get("format") != "r1fast-grpo-1":
            raise ValueError(f"{path} is not an r1fast GRPO checkpoint")
        self.step = int(state["step"])
