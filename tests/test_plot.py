"""r1fast.plot and `r1fast plot`: PNGs of one run and of several runs overlaid, from metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from r1fast.cli import main
from r1fast.plot import plot_runs

pytest.importorskip("matplotlib")


def _run(path, steps, scale, sft=False):
    path.mkdir(parents=True)
    with (path / "metrics.jsonl").open("w") as f:
        for step in range(1, steps + 1):
            record = {"step": step, "loss": scale / step, "grad_norm": 1.0}
            if not sft:
                record.update({"reward": scale * step / steps, "rewards/accuracy/mean": step / steps,
                               "rewards/format/mean": 1.0, "completions/mean_length": 20.0 + step, "kl": None,
                               "entropy": 0.5, "clip_ratio/region_mean": 0.0, "step_time": 0.2,
                               "time/generate": 0.15, "time/train": 0.05})  # fmt: skip
                if step % 5 == 0:
                    record["eval/rewards/accuracy/mean"] = step / steps
            f.write(json.dumps(record) + "\n")
    return path


def _image_size(path):
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.format, image.size


@pytest.mark.parametrize("runs", [1, 2])
def test_plot_writes_png_files_that_open_as_images(tmp_path, runs):
    dirs = [_run(tmp_path / f"run{i}", 10 + 5 * i, 1.0 + i) for i in range(runs)]
    written = plot_runs(dirs, tmp_path / "out")
    names = {p.name for p in written}
    assert {"reward.png", "loss.png", "length.png", "kl_entropy.png", "clip_ratio.png", "step_time.png"} == names
    for path in written:
        assert path.parent == tmp_path / "out" and path.stat().st_size > 1000
        kind, (width, height) = _image_size(path)
        assert kind == "PNG" and width > 200 and height > 100


def test_plot_of_an_sft_run_has_only_its_figures_and_defaults_to_the_run_folder(tmp_path):
    run = _run(tmp_path / "sft", 6, 2.0, sft=True)
    assert [p.relative_to(run).as_posix() for p in plot_runs([run])] == ["plots/loss.png"]


def test_plot_command_overlays_runs_and_reports_a_folder_without_metrics(tmp_path, capsys):
    a, b = _run(tmp_path / "a", 8, 1.0), _run(tmp_path / "b", 8, 2.0)
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "both")]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "both" / "reward.png") in printed and all(p.endswith(".png") for p in printed)
    assert main(["plot", str(a), str(tmp_path / "missing")]) == 2
    assert "missing: no metrics.jsonl" in capsys.readouterr().err
