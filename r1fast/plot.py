"""PNG plots of runs from their ``metrics.jsonl``: ``python -m r1fast plot RUN_DIR [RUN_DIR ...]`` (several runs are
overlaid, one colour each); train, sft and demo write them at the end of a run. Needs matplotlib (Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TextIO

from r1fast.trainer.logging import read_metrics

# One figure per file: (file name, title, [(panel title, [(metric key, line style)])]). A figure whose metrics no
# run has is not written; a panel without data is left out.
FIGURES = (
    ("reward.png", "reward and accuracy", [
        ("reward", [("reward", "-"), ("eval/reward", "--")]),
        ("accuracy", [("rewards/accuracy/mean", "-"), ("eval/rewards/accuracy/mean", "--")]),
        ("format", [("rewards/format/mean", "-"), ("eval/rewards/format/mean", "--")]),
    ]),
    ("loss.png", "loss", [
        ("loss", [("loss", "-"), ("eval/loss", "--")]),
        ("grad norm", [("grad_norm", "-")]),
    ]),
    ("length.png", "completion length", [
        ("mean completion length (tokens)", [("completions/mean_length", "-"), ("eval/completions/mean_length", "--")]),
        ("clipped ratio", [("completions/clipped_ratio", "-")]),
    ]),
    ("kl_entropy.png", "KL and entropy", [
        ("KL", [("kl", "-")]),
        ("entropy", [("entropy", "-")]),
    ]),
    ("clip_ratio.png", "clip ratios", [
        ("clip ratio", [("clip_ratio/region_mean", "-"), ("clip_ratio/low_mean", "--"), ("clip_ratio/high_mean", ":")]),
    ]),
    ("step_time.png", "time per step", [
        ("seconds", [("step_time", "-"), ("time/generate", "--"), ("time/train", ":")]),
    ]),
)  # fmt: skip


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def plot_runs(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike | None = None,
              labels: list[str] | None = None) -> list[Path]:  # fmt: skip
    """Writes the PNGs of FIGURES for the runs in run_dirs (each holds a metrics.jsonl) into out_dir (default:
    ``<run_dir>/plots`` for one run, ``./plots`` for several), each run a colour, labelled by labels (default: the
    folder names). Returns the files written. FileNotFoundError naming a run without metrics.jsonl; ValueError when
    no run has a record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for run in run_dirs:
        if not (Path(run) / "metrics.jsonl").is_file():
            raise FileNotFoundError(f"{run}: no metrics.jsonl (not a run folder)")
        runs.append(read_metrics(run))
    if not any(runs):
        raise ValueError(f"no metrics in {', '.join(map(str, run_dirs))}")
    labels = labels or [Path(run).resolve().name for run in run_dirs]
    out = Path(out_dir) if out_dir is not None else (Path(run_dirs[0]) / "plots" if len(run_dirs) == 1
                                                      else Path("plots"))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    written = []
    for name, title, panels in FIGURES:
        shown = [(t, lines) for t, lines in panels if any(_series(r, k)[0] for r in runs for k, _ in lines)]
        if not shown:
            continue
        fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.2), squeeze=False)
        for ax, (panel, lines) in zip(axes[0], shown, strict=True):
            for i, (records, label) in enumerate(zip(runs, labels, strict=True)):
                for key, style in lines:
                    steps, values = _series(records, key)
                    if steps:
                        ax.plot(steps, values, style, color=colours[i % len(colours)], marker="." if
                                len(steps) < 20 else None, label=f"{label}: {key}" if len(runs) > 1 else key)
            ax.set_title(panel, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(title)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def write_run_plots(output_dir: str | os.PathLike | None, stream: TextIO | None) -> list[Path]:
    """What train, sft and demo do at the end: the run's PNGs into <output_dir>/plots and one line naming them on
    stream (None: silent); a note instead when matplotlib is missing. Nothing without a metrics.jsonl."""
    if not output_dir or not (Path(output_dir) / "metrics.jsonl").is_file():
        return []
    try:
        written = plot_runs([output_dir])
    except ImportError:
        written, line = [], "plots: skipped (matplotlib is not installed)"
    else:
        line = f"plots: {', '.join(str(p) for p in written)}"
    if stream is not None:
        print(line, file=stream, flush=True)
    return written
