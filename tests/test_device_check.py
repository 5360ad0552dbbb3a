"""benchmarks/device_check.sh: the dry run goes through every stage of the GPU plan on CPU and writes the summary;
a spent budget, a stage cut short and a missing peer are reported in the summary, never end the run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
STAGES = ["install", "env", "gpu-tests", "loss", "sampler", "trainer"]
TARGET_ROWS = ["`pytest -m gpu`", "`fused_linear_grpo_loss`", "`grpo_loss` (logits given)", "`fused_linear_logprobs`",
               "sampler tokens/s", "sampler decode step", "sampler-vs-trainer", "GRPO step"]  # fmt: skip


def run_check(out_dir: Path, *args: str, budget: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    if budget is not None:
        env["R1FAST_CHECK_BUDGET_S"] = str(budget)
    return subprocess.run(["bash", str(SCRIPT), *args, str(out_dir)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)  # fmt: skip


def summary_module(monkeypatch):
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "device_check", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_dry_run_goes_through_every_stage_and_writes_the_summary_last(tmp_path):
    run = run_check(tmp_path, "--dry-run")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("device_check DRY RUN: done in ") and "stages 6/6 ok" in last, last
    stages = [line.split("\t") for line in (tmp_path / "stages.tsv").read_text().splitlines()]
    assert [s[0] for s in stages] == STAGES and all(s[1] == "ok" for s in stages), stages
    summary = (tmp_path / "summary.md").read_text()
    assert "DRY RUN" in summary and all(row in summary for row in TARGET_ROWS), summary
    assert "unmeasured" not in summary, summary  # every stage ran, so every figure is there

    loss = {row["method"]: row for row in json.loads((tmp_path / "bench_loss.json").read_text())}
    for method in ("r1fast grpo_loss (logits given)", "r1fast fused_linear_grpo_loss",
                   "r1fast fused_linear_logprobs+entropy (no grad)"):  # fmt: skip
        assert "ms" in loss[method] and "floor_ms" in loss[method], loss[method]
    sampler = json.loads((tmp_path / "bench_sampler.json").read_text())
    assert [r["kind"] for r in sampler] == ["sampler"] and sampler[0]["hf_new_tokens"] == 4, sampler
    trainer = json.loads((tmp_path / "bench_trainer.json").read_text())
    assert trainer["meta"]["measured_steps"] == 1 and trainer["rows"][0]["method"] == "r1fast", trainer
    assert "step_s" in trainer["rows"][0], trainer
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["gpu"] == "none" and env["r1fast_C"] == "imports", env
    assert "#### stage gpu-tests: ok" in (tmp_path / "device_check.log").read_text()


def test_a_spent_budget_skips_each_stage_and_still_summarises(tmp_path):
    run = run_check(tmp_path, "--dry-run", budget=1)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    last = run.stdout.strip().splitlines()[-1]
    assert "stages 0/6 ok" in last and "8 unmeasured" in last, last
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("unmeasured: stage skipped") == len(TARGET_ROWS), summary


def test_summary_names_missing_peers_cut_tests_and_timed_out_stages(tmp_path, capsys, monkeypatch):
    env = {"gpu": "1 x NVIDIA H200", "packages": {"trl": "1.16.0", "liger-kernel": "not installed"}}
    (tmp_path / "env.json").write_text(json.dumps(env))
    stages = [("gpu-tests", "timed out", 124, 90, 90), ("loss", "ok", 0, 40, 110), ("sampler", "ok", 0, 50, 90),
              ("trainer", "failed (exit 1)", 1, 3, 135)]  # fmt: skip
    (tmp_path / "stages.tsv").write_text("".join("\t".join(map(str, s)) + "\t\n" for s in stages))
    (tmp_path / "device_check.log").write_text(
        "#### stage gpu-tests (cap 90 s): bash -c gpu_tests\n"
        "tests/test_grpo_loss.py::test_a PASSED [ 1%]\ntests/test_grpo_loss.py::test_b FAILED [ 2%]\n"
        "tests/test_grpo_loss.py::test_c PASSED [ 3%]\n\n#### stage gpu-tests: timed out after 90 s\n"
    )  # fmt: skip
    base = dict(N=8192, H=1536, V=151936, floor="6NHV", floor_ms=15.0, peak_extra_gib=0.9)
    (tmp_path / "bench_loss.json").write_text(json.dumps([
        {**base, "method": "r1fast fused_linear_grpo_loss", "ms": 16.0, "x_floor": 16 / 15},
        {**base, "method": "TRL 1.16 ChunkedLogProbFunction + loss", "ms": 48.0, "x_floor": 3.2},
        {**base, "method": "r1fast grpo_loss (logits given)", "error": "out of memory"},
    ]))  # fmt: skip
    sampler = dict(kind="sampler", shape="0.5B", seqs=256, prompt_len=128, new_tokens=256, r1fast_tok_s=90_000.0,
                   ms_per_step=2.0, floor_ms_per_step=0.8, step_over_floor=2.5, host_ms_per_step=0.5,
                   mean_dlogp=4e-4, max_dlogp=0.02, hf_tok_s=float("nan"))  # HF generate cut short
    (tmp_path / "bench_sampler.json").write_text(json.dumps([sampler]))

    assert summary_module(monkeypatch).summary_command(tmp_path, dry_run=False, elapsed=500) == 1
    summary = (tmp_path / "summary.md").read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in summary.splitlines() if line.startswith("| ")}
    tests = next(v for k, v in lines.items() if k.startswith("`pytest"))
    assert "2 passed, 1 failed before the cap" in tests and "FAIL: stage timed out" in tests, tests
    fused = next(v for k, v in lines.items() if k.startswith("`fused_linear_grpo_loss`"))
    assert "16.00 ms" in fused and "TRL 1.16 48.00 ms, 3.00x" in fused and "Liger fused: not installed" in fused
    assert fused.endswith("| pass |"), fused
    logits = next(v for k, v in lines.items() if k.startswith("`grpo_loss`"))
    assert "error: out of memory" in logits and "Liger triton_grpo_loss: not installed" in logits, logits
    speed = next(v for k, v in lines.items() if k.startswith("sampler tokens/s"))
    assert "90,000 tok/s" in speed and "HF generate: did not finish" in speed, speed
    step = next(v for k, v in lines.items() if k.startswith("sampler decode step"))
    assert step.endswith("| pass |"), step
    trainer = next(v for k, v in lines.items() if k.startswith("GRPO step"))
    assert "unmeasured: stage failed (exit 1)" in trainer, trainer
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "stages 2/4 ok (gpu-tests timed out; trainer failed (exit 1))" in last, last
