"""Per-step metrics: one JSON line per logged step (``metrics.jsonl``), a short console line, GPU stats from NVML."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import torch

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


class MetricsLogger:
    """Appends ``{"step": s, ...}`` lines to ``<output_dir>/metrics.jsonl`` (when output_dir is given) and prints a
    console line to ``stream`` (None: silent)."""

    def __init__(self, output_dir: str | os.PathLike | None, stream: TextIO | None = sys.stdout) -> None:
        self.path = None if output_dir is None else Path(output_dir) / "metrics.jsonl"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = stream

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self.stream is not None:
            per_reward = [k for k in record if k.startswith("rewards/") and k.endswith("/mean")]
            keys = [*CONSOLE_KEYS[:1], *per_reward, *CONSOLE_KEYS[1:]]
            shown = [f"{_short(k)} {record[k]:.4g}" for k in keys if record.get(k) is not None]
            print(f"step {step:>5} | " + " | ".join(shown), file=self.stream, flush=True)


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


def read_metrics(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``<output_dir>/metrics.jsonl``, in order."""
    with (Path(output_dir) / "metrics.jsonl").open() as f:
        return [json.loads(line) for line in f if line.strip()]
