"""Per-step metrics: one JSON line per logged step (``metrics.jsonl``), a short console line or a progress bar,
TensorBoard and W&B, a summary table at the end of a run, GPU stats from NVML."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import torch

from r1fast.trainer.config import REPORT_TO
from r1fast.trainer.validation import InputError

# What the console line shows, in order, when present, with each reward's mean after "reward" (the JSONL line holds
# everything).
CONSOLE_KEYS = ("reward", "reward_std", "completions/mean_length", "kl", "entropy", "clip_ratio/region_mean",
                "loss", "grad_norm", "step_time")  # fmt: skip


@functools.cache
def _nvml_handle(index: int):
    """NVML initialised once per process, and the handle of CUDA device `index`, found by its PCI address (NVML
    numbers every GPU of the machine, CUDA only the visible ones)."""
    import pynvml

    pynvml.nvmlInit()
    props = torch.cuda.get_device_properties(index)
    if all(hasattr(props, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
        address = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        return pynvml.nvmlDeviceGetHandleByPciBusId(address)
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def gpu_stats(device: torch.device) -> dict[str, float]:
    """Memory and utilisation of a CUDA device from NVML (nvidia-ml-py), plus torch's peak allocation; {} elsewhere
    or when NVML is unavailable."""
    if device.type != "cuda":
        return {}
    stats = {"gpu/max_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    try:
        import pynvml

        handle = _nvml_handle(device.index if device.index is not None else torch.cuda.current_device())
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        stats["gpu/used_gib"] = memory.used / 2**30
        stats["gpu/utilization"] = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # NVML missing or not permitted: torch's figure is still there
        pass
    return stats


def _short(key: str) -> str:
    """A metric's name on the console: "rewards/accuracy/mean" -> "accuracy", "clip_ratio/region_mean" ->
    "clip_ratio", "completions/mean_length" -> "mean_length"."""
    parts = key.split("/")
    if parts[0] == "rewards":
        return parts[1]
    return "clip_ratio" if parts[0] == "clip_ratio" else parts[-1]


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads as "not measured"
    return value


def report_targets(report_to: str | list[str]) -> list[str]:
    """The integrations a config's report_to names ("all": every one of REPORT_TO that is installed). InputError
    when one that is named is not installed."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if "all" in names:
        return [name for name in REPORT_TO if importlib.util.find_spec(name) is not None]
    targets = [name for name in REPORT_TO if name in names]
    for name in targets:
        if importlib.util.find_spec(name) is None:
            raise InputError(f"report_to={name!r} but {name} is not installed (pip install {name})")
    return targets


def window_mean(window: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of several steps as TRL logs them every logging_steps: each key's mean over the steps that have a
    number for it (NaN and None skipped; a key with none keeps the last value)."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for metrics in window for k in metrics):
        values = [_plain(m.get(key)) for m in window if key in m]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
        out[key] = sum(numbers) / len(numbers) if numbers else values[-1]
    return out


def report_tag(key: str) -> str:
    """The name a metric gets in TensorBoard and W&B, as TRL's runs show it (transformers' callbacks): "eval/..."
    as is, every other key under "train/"."""
    return key if key.startswith("eval/") else f"train/{key}"


class MetricsLogger:
    """Appends ``{"step": s, ...}`` lines to ``<output_dir>/metrics.jsonl`` (when output_dir is given), prints a
    console line to ``stream`` (None: silent) or, with progress_bar, shows a tqdm bar there (reward, accuracy, ETA),
    sends the metrics to report_to's integrations (TensorBoard event files under ``<output_dir>/runs``; W&B with its
    own environment: WANDB_PROJECT, WANDB_MODE=offline, ...) and prints a summary table at the end of a run.
    run_config: the run's config (W&B records it). InputError: an integration that is not installed, or TensorBoard
    without output_dir."""

    def __init__(self, output_dir: str | os.PathLike | None, stream: TextIO | None = sys.stdout, *,
                 report_to: str | list[str] = "none", progress_bar: bool = False,
                 run_config: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.path = None if output_dir is None else Path(output_dir) / "metrics.jsonl"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = stream
        self.targets = report_targets(report_to)
        if "tensorboard" in self.targets and output_dir is None:
            raise InputError("report_to='tensorboard' needs an output_dir (the event files go to <output_dir>/runs)")
        self.output_dir, self.run_config = output_dir, run_config or {}
        self.use_bar = progress_bar and stream is not None
        self._bar = self._tensorboard = self._wandb = None
        self.records: list[dict[str, Any]] = []

    def start(self, step: int, total: int) -> None:
        """A run starts at `step` of `total`: the progress bar and the integrations open."""
        if self.use_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=step, file=self.stream, unit="step", dynamic_ncols=True)
        if "tensorboard" in self.targets:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(Path(self.output_dir) / "runs"))
        if "wandb" in self.targets:
            import wandb

            self._wandb = wandb.run or wandb.init(project=os.environ.get("WANDB_PROJECT", "r1fast"),
                                                  config=self.run_config, dir=str(self.output_dir or "."))  # fmt: skip

    def progress(self, step: int, metrics: dict[str, Any]) -> None:
        """Every step: the bar moves to `step`, with the reward and accuracy (or the loss) of this step."""
        if self._bar is None:
            return
        shown = {}
        for key in ("reward", "rewards/accuracy/mean", "eval/rewards/accuracy/mean", "loss", "eval/loss"):
            value = _plain(metrics.get(key))
            if isinstance(value, (int, float)):
                shown[_bar_name(key)] = f"{value:.3g}"
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(step - self._bar.n)

    def log(self, step: int, metrics: dict[str, Any], report: dict[str, Any] | None = None) -> None:
        """Every step: `metrics` go to metrics.jsonl (and records). report: what the console, TensorBoard and W&B show
        at this step (TRL's logging_steps: the mean of the window since the last report), or None."""
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.records.append(record)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if report is not None:
            self.report(step, report)

    def report(self, step: int, metrics: dict[str, Any]) -> None:
        """`metrics` of `step` to the console (unless a bar is shown), TensorBoard and W&B."""
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        numbers = {report_tag(k): v for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip
        if self._tensorboard is not None:
            for tag, value in numbers.items():
                self._tensorboard.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log({**numbers, "train/global_step": step}, step=step)
        if self.stream is not None and self._bar is None:
            per_reward = [k for k in record if k.startswith("rewards/") and k.endswith("/mean")]
            keys = [*CONSOLE_KEYS[:1], *per_reward, *CONSOLE_KEYS[1:]]
            shown = [f"{_short(k)} {record[k]:.4g}" for k in keys if record.get(k) is not None]
            evals = [f"{k.removeprefix('eval/')} {record[k]:.4g}" for k in record
                     if k.startswith("eval/") and (k.endswith("/mean") or k in ("eval/reward", "eval/loss"))
                     and record[k] is not None]  # fmt: skip
            line = f"step {step:>5} | " + " | ".join(shown)
            print(line + (" || eval: " + " | ".join(evals) if evals else ""), file=self.stream, flush=True)

    def finish(self) -> None:
        """The run ends (or stops): the bar and the integrations close, and when this call logged a step, the summary
        table of the whole run (metrics.jsonl when there is one, else the steps logged here) goes to the stream."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self.stream is None or not self.records:  # nothing trained in this call: nothing to sum up
            return
        records = read_metrics(self.path.parent) if self.path is not None and self.path.exists() else self.records
        table = summary_table(records)
        if table:
            print(table, file=self.stream, flush=True)


    def truncate(self, step: int) -> None:
        """Keeps the records of steps <= step (and drops a line a crash cut short), so that a run resumed from a
        checkpoint of `step` appends its steps without duplicates. The file is replaced atomically."""
        if self.path is None or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line + "\n")
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(self.path)


def _bar_name(key: str) -> str:
    return {"rewards/accuracy/mean": "accuracy", "eval/rewards/accuracy/mean": "eval_accuracy",
            "eval/loss": "eval_loss"}.get(key, key)  # fmt: skip


# The summary's rows: (label, metric keys tried in order, which end is best: "max" or "min").
SUMMARY_ROWS = (
    ("reward", ("reward",), "max"),
    ("accuracy", ("rewards/accuracy/mean",), "max"),
    ("eval reward", ("eval/reward",), "max"),
    ("eval accuracy", ("eval/rewards/accuracy/mean",), "max"),
    ("loss", ("loss",), "min"),
    ("eval loss", ("eval/loss",), "min"),
    ("completion length", ("completions/mean_length",), "max"),
    ("step time (s)", ("step_time",), "min"),
    ("peak memory (GiB)", ("gpu/max_allocated_gib",), "max"),
)


def summary_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table of the first, last and best value (and the step of the best) of the reward, accuracy,
    losses, completion length, time per step and peak GPU memory over `records` (metrics.jsonl's), for those
    present; "" when there is nothing to show. Best is the largest, or the smallest for a loss and a time."""
    lines = []
    for label, keys, best in SUMMARY_ROWS:
        key = next((k for k in keys if any(isinstance(r.get(k), (int, float)) for r in records)), None)
        if key is None:
            continue
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        pick = max if best == "max" else min
        best_step, best_value = pick(points, key=lambda p: p[1])
        lines.append(f"{label:<18} {points[0][1]:>10.4g} {points[-1][1]:>10.4g} {best_value:>10.4g} "
                     f"{'(' + best + ', step ' + str(best_step) + ')':>18}")  # fmt: skip
    if not lines:
        return ""
    steps = f"steps {records[0]['step']}-{records[-1]['step']}"
    return "\n".join([f"summary ({steps})", f"{'':<18} {'first':>10} {'last':>10} {'best':>10}", *lines])


def read_metrics(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``<output_dir>/metrics.jsonl``, in order."""
    with (Path(output_dir) / "metrics.jsonl").open() as f:
        return [json.loads(line) for line in f if line.strip()]
