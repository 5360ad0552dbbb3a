"""The part of a training run that GRPO and SFT share: the data order, the learning-rate schedule, the loop with its
evaluation, logging, checkpoints, resume, clean stops and final export (see GRPOTrainer.train for the guarantees)."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from r1fast.sampler.sampling import mix_seed
from r1fast.trainer import checkpoint, distributed
from r1fast.trainer.logging import MetricsLogger, window_mean
from r1fast.trainer.signals import StopRequest
from r1fast.trainer.validation import InputError


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Hugging Face's non-reentrant activation checkpointing of every decoder layer (transformers >= 5.x names it
    activation_checkpointing_enable; earlier releases gradient_checkpointing_enable)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def lr_factor(schedule: str, warmup_steps: int, total_steps: int, step: int) -> float:
    """The learning-rate multiplier at optimizer step `step` (0-based) of `total_steps`: linear warmup from 0, then
    the schedule, "constant", "linear" or "cosine" (HF's semantics with warmup)."""
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    remaining = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / remaining)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config: Any) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters with the config's learning_rate, adam_beta1/2, adam_epsilon and
    weight_decay. InputError when nothing is trainable."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("the model has no trainable parameters")
    return torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                             eps=config.adam_epsilon, weight_decay=config.weight_decay)  # fmt: skip


class TrainingLoop:
    """The loop of GRPOTrainer and SFTTrainer. A subclass sets, in its __init__: config (max_steps, output_dir,
    logging_steps, save_steps, save_every_minutes, save_total_limit, eval_steps, seed; to_dict, fingerprint,
    changed_keys), model, tokenizer, optimizer, train_dataset, eval_dataset (None: no evaluation), step (optimizer
    steps taken), rank, world_size, device, log_stream and logger (a MetricsLogger); and defines train_step() ->
    metrics, evaluate() -> metrics (when eval_dataset is given) and CHECKPOINT_FORMAT."""

    CHECKPOINT_FORMAT = ""
    config: Any
    logger: MetricsLogger
    log_stream: TextIO | None
    eval_dataset: Any = None
    _perm: list[int]  # the permutation of epoch _perm_epoch (set by _permutation)
    _perm_epoch = -1

    def train_step(self) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """What a subclass adds to trainer_state.json (JSON values)."""
        return {}

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        """Reads back what extra_state wrote, from a checkpoint's trainer state."""

    def rank_state(self) -> dict[str, torch.Tensor] | None:
        """What this rank alone holds that the next steps need (tensors), saved by every rank with a checkpoint."""
        return None

    def restore_rank_state(self, tensors: dict[str, torch.Tensor] | None, same_world: bool) -> None:
        """Reads back what rank_state wrote (None: nothing was written for this rank). same_world: the checkpoint
        was written by as many ranks as this run has."""

    @property
    def steps_done(self) -> int:
        """Optimizer steps completed: what max_steps, logging, evaluation, metrics.jsonl and checkpoint names count
        (TRL's global step)."""
        return self.step

    def rows_of_batch(self, batch: int, per_rank: int) -> list[dict[str, Any]]:
        """This rank's dataset rows of batch `batch` (0-based): consecutive slices of a fresh permutation of
        train_dataset per epoch, drawn from (seed, epoch) alone, so a resumed run sees the same rows; rank r takes
        the r-th `per_rank` rows of the batch's world_size * per_rank."""
        n = len(self.train_dataset)
        first = (batch * self.world_size + self.rank) * per_rank
        rows = []
        for position in range(first, first + per_rank):
            epoch, offset = divmod(position, n)
            rows.append(self.train_dataset[self._permutation(epoch)[offset]])
        return rows

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm_epoch != epoch:
            generator = torch.Generator().manual_seed(mix_seed(self.config.seed, epoch))
            self._perm = torch.randperm(len(self.train_dataset), generator=generator).tolist()
            self._perm_epoch = epoch
        return self._perm

    def set_learning_rate(self, total_steps: int) -> float:
        """Sets the optimizer's learning rate for optimizer step self.step of total_steps (lr_factor of the config's
        lr_scheduler_type and warmup_steps, times learning_rate) and returns it."""
        cfg = self.config
        lr = cfg.learning_rate * lr_factor(cfg.lr_scheduler_type, cfg.warmup_steps, total_steps, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def optimizer_step(self) -> float:
        """After the backward: gradients averaged over ranks, clipped to max_grad_norm (0: not clipped), one
        optimizer step (self.step += 1). Returns the gradient norm before clipping."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        distributed.average_gradients(params)
        clip = self.config.max_grad_norm if self.config.max_grad_norm > 0 else math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        self.optimizer.step()
        self.step += 1
        return norm

    rows_per_step = 1  # dataset rows one batch reads on one rank (a subclass sets it from its config)
    steps_per_batch = 1  # optimizer steps on one batch of rows (GRPO: num_iterations)

    @property
    def total_steps(self) -> int:
        """The run's length in optimizer steps: config.max_steps, or with max_steps -1 (TRL's default)
        num_train_epochs passes over train_dataset, world_size * rows_per_step rows a batch (rounded up, at least 1),
        steps_per_batch optimizer steps a batch."""
        cfg = self.config
        if cfg.max_steps > 0:
            return cfg.max_steps
        per_batch = self.rows_per_step * self.world_size
        return max(1, math.ceil(cfg.num_train_epochs * len(self.train_dataset) / per_batch)) * self.steps_per_batch

    def _evaluation_due(self, step: int) -> bool:
        """An eval_dataset is given and this step is a multiple of eval_steps, or the last."""
        every = self.config.eval_steps
        return self.eval_dataset is not None and (bool(every) and step % every == 0 or step == self.total_steps)

    def train(self, resume_from: str | os.PathLike | None = None, *, overwrite: bool = False,
              allow_config_change: bool = False,
              export_dir: str | os.PathLike | None = None) -> list[dict[str, float]]:  # fmt: skip
        """Runs the optimizer steps up to total_steps (config.max_steps, or num_train_epochs over the dataset when
        it is -1; GRPO: num_iterations steps on each generation batch, as TRL counts them).

        resume_from: None (a fresh start), "latest" (the newest checkpoint under output_dir whose manifest
        verifies; newer ones that do not verify are named in a CheckpointWarning; a fresh start when there is none)
        or a checkpoint folder. A fresh start into an output_dir that holds a previous run raises InputError unless
        overwrite (which deletes its checkpoints, final export, metrics, plots and TensorBoard events). A checkpoint
        whose config differs from this one (RUN_LENGTH_KEYS aside) raises InputError unless allow_config_change. On
        resume metrics.jsonl is cut back to the checkpoint's step, so no step appears twice.

        Writes every step's metrics to metrics.jsonl; every logging_steps steps reports the mean of the steps since
        the last report (TRL's logging) to the console (or a progress bar), TensorBoard / W&B as config.report_to
        says; evaluates on eval_dataset every eval_steps steps and after the last (metrics "eval/..."); prints a
        summary table at the end; with output_dir saves every save_steps steps,
        every save_every_minutes minutes and at the end, keeping save_total_limit; at the end exports the model, its
        config and the tokenizer to export_dir (default <output_dir>/final). SIGINT/SIGTERM: the current step
        finishes, a checkpoint is written and train returns; a second signal raises KeyboardInterrupt at once. Under
        torch.distributed rank 0 decides where to start and writes; every rank loads the same checkpoint and stops
        after the same step. Returns the metrics of the steps run, one dict per step."""
        cfg = self.config
        if resume_from is not None and overwrite:
            raise InputError("resume_from and overwrite exclude each other")
        start = distributed.on_rank0(lambda: self._choose_start(resume_from, overwrite, allow_config_change))
        if start is not None:
            self.load(start, verify=False)  # rank 0 verified it
            self._say(f"resumed from {start} at step {self.steps_done}")
            if self.steps_done >= self.total_steps:
                self._say(f"the run is finished: {start.name} is at step {self.steps_done} and max_steps="
                          f"{self.total_steps} (raise max_steps to train further)")  # fmt: skip
        if self.rank == 0:
            self.logger.truncate(self.steps_done)
        history = []
        total = self.total_steps
        self.logger.start(self.steps_done, total)
        last_save, saved_step = time.monotonic(), self.steps_done if start is not None else None
        with StopRequest() as stop:
            window: list[dict[str, float]] = []  # the steps since the last report
            while self.steps_done < total:
                metrics = self.train_step()
                step = self.steps_done
                evaluated = self._evaluation_due(step)
                if evaluated:  # on every rank (a sharded model gathers its weights for it); rank 0 logs
                    metrics.update({f"eval/{k}": v for k, v in self.evaluate().items()})
                self.logger.progress(step, metrics)
                window.append(metrics)
                reporting = step % cfg.logging_steps == 0 or step == total or evaluated
                self.logger.log(step, metrics, report=window_mean(window) if reporting else None)
                history.append({"step": step, **metrics})
                if reporting:
                    window = []
                minutes = (time.monotonic() - last_save) / 60
                (overdue,) = distributed.any_rank([0 < cfg.save_every_minutes <= minutes], self.device)
                periodic = cfg.save_steps and step % cfg.save_steps == 0
                if cfg.output_dir and (overdue or periodic or step == total):
                    self.save()
                    last_save, saved_step = time.monotonic(), step
                (stopping,) = distributed.any_rank([stop.signal_name is not None], self.device)
                if stopping:
                    if window:
                        self.logger.report(step, window_mean(window))
                    self.logger.finish()
                    self._stop(stop.signal_name, saved=saved_step == step)
                    return history
        self.logger.finish()
        export = Path(export_dir) if export_dir else (Path(cfg.output_dir) / checkpoint.FINAL_DIR if cfg.output_dir
                                                      else None)  # fmt: skip
        if export is not None and distributed.on_rank0(lambda: checkpoint.verified_step(export)) != self.steps_done:
            self.export(export)
            self._say(f"step {self.steps_done} of {total} done: the model, its config and tokenizer are in "
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
            for derived in (out / "plots", out / "runs") if previous else ():  # its plots and TensorBoard events
                if derived.is_dir():
                    shutil.rmtree(derived)
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
        state = {"step": self.step, "config": self.config.to_dict(), "format": self.CHECKPOINT_FORMAT,
                 "world_size": self.world_size, **self.extra_state()}  # fmt: skip
        return checkpoint.write_checkpoint(path, self.model, optimizer, state, step=self.steps_done,
                                           config_hash=self.config.fingerprint(), tokenizer=self.tokenizer,
                                           rank_tensors=None if optimizer is None else self.rank_state())  # fmt: skip

    def load(self, path: str | os.PathLike, *, verify: bool = True) -> None:
        """Restores the model, optimizer and step from a checkpoint written by save() (the dataset order and the
        sampling seeds follow from the config's seed and the step, so the run continues as if never stopped).
        verify: check the manifest's sizes and checksums first. Raises CheckpointError."""
        state = checkpoint.load_checkpoint(path, self.model, self.optimizer, verify=verify)
        if state.get("format") != self.CHECKPOINT_FORMAT:
            raise checkpoint.CheckpointError(f"{path} is not a checkpoint of this trainer (format "
                                             f"{state.get('format')!r}, expected {self.CHECKPOINT_FORMAT!r})")
        self.step = int(state["step"])
        self.restore_extra_state(state)
        self.restore_rank_state(checkpoint.load_rank_tensors(path, self.rank),
                                state.get("world_size", self.world_size) == self.world_size)
