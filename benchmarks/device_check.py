"""The Python half of benchmarks/device_check.sh: the environment report, and the summary of every stage.

    python benchmarks/device_check.py env OUT_DIR                   # prints the environment, writes OUT_DIR/env.json
    python benchmarks/device_check.py summary OUT_DIR [--dry-run]   # writes OUT_DIR/summary.md, prints it, then one
                                                                    # final line; exit 1 if a stage did not finish ok

The summary reads what the stages left in OUT_DIR: stages.tsv (name, status, exit code, seconds, cap, one line per
stage, written by device_check.sh), env.json, bench_loss.json, bench_sampler.json, bench_trainer.json and
device_check.log (the pytest lines). It imports only the standard library, so a broken torch cannot hide what was
measured. Each target is the one benchmarks/RESULTS.md states (set for an H100); a figure that is missing says why
("unmeasured: ..."), and a peer that is not installed says so instead of counting as a failure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# The targets of benchmarks/RESULTS.md (on an H100), in one place.
FUSED_MS, FUSED_GIB = 17.0, 1.2  # fused_linear_grpo_loss fwd+bwd at N = 8192, H = 1536
LOGITS_X_FLOOR = 1.05  # grpo_loss (logits given) over its 3-pass bandwidth floor
LOGPROBS_X_FLOOR = 1.2  # fused_linear_logprobs + entropy (no grad) over one 2NHV matmul
SAMPLER_X_HF = 25.0  # sampler tokens/s over HF generate's, 0.5B shape, 256 sequences
STEP_X_FLOOR = 3.0  # sampler decode step over its weights + KV bandwidth floor
MEAN_DLOGP = 1e-3  # sampler-vs-trainer mean |delta logp| in bf16

# Distribution name -> import name of each package the benchmarks compare against or run on.
PACKAGES = {"torch": "torch", "triton": "triton", "transformers": "transformers", "trl": "trl",
            "liger-kernel": "liger_kernel", "datasets": "datasets", "accelerate": "accelerate",
            "flash-attn": "flash_attn", "pybind11": "pybind11", "r1fast": "r1fast"}  # fmt: skip
PEERS = ("trl", "liger-kernel", "datasets", "flash-attn")

LOSS = {  # bench_loss.py's method names
    "logits": "r1fast grpo_loss (logits given)",
    "fused": "r1fast fused_linear_grpo_loss",
    "logprobs": "r1fast fused_linear_logprobs+entropy (no grad)",
    "eager": "eager PyTorch (reference)",
    "trl": "TRL 1.16 ChunkedLogProbFunction + loss",
    "liger": "Liger triton_grpo_loss",
    "liger_fused": "Liger LigerFusedLinearGRPOLoss",
}


# -- env ----------------------------------------------------------------------------------------------------------


def command_line(*args: str) -> str:
    try:
        run = subprocess.run(args, capture_output=True, text=True, timeout=20)
        return (run.stdout or run.stderr).strip().splitlines()[0] if run.returncode == 0 else "not working"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "not found"


def package_status(dist: str, module: str) -> str:
    """'<version>', 'not installed', or '<version> (import fails: ...)'."""
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
    try:
        __import__(module)
    except Exception as err:  # a wheel whose needs are missing or too old: the benchmark would skip it
        return f"{version} (import fails: {type(err).__name__}: {str(err)[:120]})"
    return version


def environment() -> dict:
    import os
    import platform

    env = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "gpu": "none", "driver": "none",
           "cuda": "none", "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
           "python_executable": sys.executable}  # fmt: skip
    try:
        import torch

        env["cuda"] = torch.version.cuda or "none (CPU build of torch)"
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env["gpu"] = (f"{torch.cuda.device_count()} x {props.name} (sm_{props.major}{props.minor}, "
                          f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)")  # fmt: skip
    except Exception as err:
        env["gpu"] = f"unknown (torch: {type(err).__name__}: {err})"[:200]
    smi = command_line("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    env["driver"] = smi if smi not in ("not found", "not working") else f"nvidia-smi {smi}"
    env["packages"] = {dist: package_status(dist, module) for dist, module in PACKAGES.items()}
    try:
        import r1fast._C  # noqa: F401

        env["r1fast_C"] = "imports"
    except Exception as err:
        env["r1fast_C"] = f"import fails: {type(err).__name__}: {err}"[:200]
    env["cmake"], env["ninja"] = command_line("cmake", "--version"), command_line("ninja", "--version")
    return env


def env_command(out_dir: Path) -> None:
    env = environment()
    (out_dir / "env.json").write_text(json.dumps(env, indent=1))
    for key, value in env.items():
        if key == "packages":
            print("packages")
            for dist, status in value.items():
                print(f"  {dist:14} {status}")
        else:
            print(f"{key:18} {value}")


# -- summary ------------------------------------------------------------------------------------------------------


@dataclass
class Line:
    target: str
    measured: str
    peer: str
    floor: str
    verdict: str


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def number(x: float | None, spec: str) -> str:
    return "n/a" if x is None or x != x else format(x, spec)  # NaN: peak memory is not measured on CPU


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def unmeasured(stage: dict | None, what: str) -> str:
    """Why a figure is missing: its stage's status, or that the stage ran without producing it."""
    if stage is None:
        return "unmeasured: stage did not run"
    if stage["status"] != "ok":
        return f"unmeasured: stage {stage['status']}"
    return f"unmeasured: no {what}"


def peer_cell(label: str, row: dict | None, package: str, env: dict, ours_ms: float | None) -> str:
    status = env.get("packages", {}).get(package, "unknown")
    if row is None:
        if status == "not installed":
            return f"{label}: not installed"
        if "import fails" in status:
            return f"{label}: import fails"
        return f"{label}: no row" + (" (CUDA only)" if env.get("gpu") == "none" else "")
    if "error" in row:
        return f"{label}: error ({row['error'][:60]})"
    ratio = f", {row['ms'] / ours_ms:.2f}x r1fast's time" if ours_ms else ""
    return f"{label} {row['ms']:.2f} ms{ratio}"


def loss_lines(rows: list[dict] | None, stage: dict | None, env: dict) -> list[Line]:
    by_method = {r["method"]: r for r in rows or []}
    got = {key: by_method.get(name) for key, name in LOSS.items()}
    ok = {key: r for key, r in got.items() if r is not None and "error" not in r}
    shape = f"N = {rows[0]['N']}, H = {rows[0]['H']}" if rows else "N = 8192, H = 1536"

    def missing(key: str) -> str:
        row = got[key]
        return f"error: {row['error'][:80]}" if row is not None else unmeasured(stage, "row")

    lines = []
    fused = ok.get("fused")
    peers = "; ".join(peer_cell(label, got[key], package, env, fused and fused["ms"]) for label, key, package in
                      (("eager", "eager", "torch"), ("TRL 1.16", "trl", "trl"),
                       ("Liger fused", "liger_fused", "liger-kernel")))  # fmt: skip
    lines.append(Line(
        f"`fused_linear_grpo_loss` fwd+bwd, {shape}: <= {FUSED_MS:g} ms at <= {FUSED_GIB:g} GiB extra peak",
        f"{fused['ms']:.2f} ms, {number(fused['peak_extra_gib'], '.2f')} GiB" if fused else "-", peers,
        f"6NHV {fused['floor_ms']:.2f} ms" if fused else "-",
        verdict(fused["ms"] <= FUSED_MS and fused["peak_extra_gib"] <= FUSED_GIB) if fused else missing("fused"),
    ))  # fmt: skip
    logits = ok.get("logits")
    lines.append(Line(
        f"`grpo_loss` (logits given) fwd+bwd: <= {LOGITS_X_FLOOR:g}x the 3-pass bandwidth floor",
        f"{logits['ms']:.2f} ms ({logits['x_floor']:.2f}x)" if logits else "-",
        peer_cell("Liger triton_grpo_loss", got["liger"], "liger-kernel", env, logits and logits["ms"]),
        f"3 passes {logits['floor_ms']:.2f} ms" if logits else "-",
        verdict(logits["x_floor"] <= LOGITS_X_FLOOR) if logits else missing("logits"),
    ))  # fmt: skip
    logprobs = ok.get("logprobs")
    lines.append(Line(
        f"`fused_linear_logprobs` + entropy (no grad): <= {LOGPROBS_X_FLOOR:g}x one 2NHV matmul",
        f"{logprobs['ms']:.2f} ms ({logprobs['x_floor']:.2f}x)" if logprobs else "-", "-",
        f"2NHV {logprobs['floor_ms']:.2f} ms" if logprobs else "-",
        verdict(logprobs["x_floor"] <= LOGPROBS_X_FLOOR) if logprobs else missing("logprobs"),
    ))  # fmt: skip
    return lines


def sampler_lines(rows: list[dict] | None, stage: dict | None) -> list[Line]:
    row = next((r for r in rows or [] if r.get("kind") == "sampler"), None)
    what = (f"{row['shape']}, {row['seqs']} seqs, prompt {row['prompt_len']}, {row['new_tokens']} new"
            if row else "0.5B, 256 seqs, prompt 128, 256 new")  # fmt: skip
    if row is None:
        why = unmeasured(stage, "sampler row")
        return [Line(f"sampler tokens/s ({what}): >= {SAMPLER_X_HF:g}x HF generate", "-", "-", "-", why),
                Line(f"sampler decode step: <= {STEP_X_FLOOR:g}x its bandwidth floor", "-", "-", "-", why),
                Line(f"sampler-vs-trainer mean abs dlogp: <= {MEAN_DLOGP:g}", "-", "-", "-", why)]  # fmt: skip
    hf, speedup = row.get("hf_tok_s"), row.get("speedup_vs_hf")
    hf_new = row.get("hf_new_tokens", row["new_tokens"])
    if speedup is not None:
        peer = f"HF generate {hf:,.0f} tok/s ({hf_new} new tokens)"
        speed_verdict = verdict(speedup >= SAMPLER_X_HF)
    else:  # r1fast's figures were saved before the HF baseline ran; it did not finish
        peer = "HF generate: did not finish"
        speed_verdict = unmeasured(stage, "HF generate figure")
    mean = row["mean_dlogp"]
    return [
        Line(f"sampler tokens/s ({what}): >= {SAMPLER_X_HF:g}x HF generate",
             f"{row['r1fast_tok_s']:,.0f} tok/s" + (f" ({speedup:.1f}x HF)" if speedup is not None else ""), peer,
             "-", speed_verdict),
        Line(f"sampler decode step: <= {STEP_X_FLOOR:g}x its bandwidth floor",
             f"{row['ms_per_step']:.2f} ms/step ({row['step_over_floor']:.1f}x; host {row['host_ms_per_step']:.2f} ms)",
             "-", f"weights + KV {row['floor_ms_per_step']:.3f} ms", verdict(row["step_over_floor"] <= STEP_X_FLOOR)),
        Line(f"sampler-vs-trainer mean abs dlogp: <= {MEAN_DLOGP:g}", f"{mean:.1e} (max {row['max_dlogp']:.1e})",
             "-", "-", verdict(mean <= MEAN_DLOGP) if mean == mean else "unmeasured: no log-probs"),
    ]  # fmt: skip


def trainer_lines(data: dict | None, stage: dict | None) -> list[Line]:
    rows = {r["method"]: r for r in (data or {}).get("rows", [])}
    meta = (data or {}).get("meta", {})
    what = (f"{meta['shape']}, {meta['prompts']} prompts x {meta['G']} x {meta['completion_len']} tokens"
            if meta else "0.5B, 16 prompts x 8 x 256 tokens")  # fmt: skip
    target = f"GRPO step ({what}): r1fast vs TRL 1.16 (no target set)"
    ours = rows.get("r1fast")
    if ours is None or "step_s" not in ours:
        why = f"error: {ours['error'][:80]}" if ours and "error" in ours else unmeasured(stage, "r1fast row")
        return [Line(target, "-", "-", "-", why)]

    def peer(name: str, label: str) -> str:
        row = rows.get(name)
        if row is None:
            return f"{label}: did not run"
        if "skipped" in row:
            return f"{label}: skipped ({row['skipped']})"
        if "step_s" not in row:
            return f"{label}: error ({row.get('error', 'no figure')[:60]})"
        return f"{label} {row['step_s']:.2f} s/step ({row['step_s'] / ours['step_s']:.1f}x r1fast's time)"

    peers = f"{peer('TRL 1.16 (HF generate)', 'TRL 1.16')}; {peer('TRL + r1fast loss', 'TRL + r1fast loss')}"
    measured = (f"{ours['step_s']:.2f} s/step (generate {ours['generate_s']:.2f} + train {ours['train_s']:.2f}), "
                f"{ours['tokens_per_s']:,.0f} tok/s")  # fmt: skip
    return [Line(target, measured, peers, "-", "reported")]


def pytest_counts(log: str) -> tuple[dict[str, int], bool] | None:
    """(counts, whether the run ended) of the gpu-tests section of the log: the counts of pytest's closing line, or,
    when the stage was cut before that line, of its per-test lines. None when the section is missing."""
    match = re.search(r"#### stage gpu-tests .*?\n(.*?)(?:#### stage gpu-tests: |\Z)", log, re.S)
    if not match:
        return None
    section = match.group(1)
    closing = [line for line in section.splitlines() if re.match(r"^=+ .* in [\d.]+s", line)]
    if closing:
        found = re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)", closing[-1])
        return {("error" if word.startswith("error") else word): int(n) for n, word in found}, True
    return {word.lower(): len(re.findall(rf"\b{word}\b", section)) for word in ("PASSED", "FAILED", "ERROR")}, False


def tests_line(log: str, stage: dict | None) -> Line:
    target = "`pytest -m gpu`: every test passes"
    parsed = pytest_counts(log)
    if parsed is None:
        return Line(target, "-", "-", "-", unmeasured(stage, "pytest output"))
    counts, ended = parsed
    measured = ", ".join(f"{n} {word}" for word, n in counts.items() if n) or "no test ended"
    failed = counts.get("failed", 0) + counts.get("error", 0)
    if not ended:
        return Line(target, measured + " before the cap", "-", "-", f"FAIL: stage {stage['status'] if stage else '?'}")
    if not failed and not counts.get("passed") and counts.get("skipped"):
        return Line(target, measured, "-", "-", "skipped (no CUDA)")
    return Line(target, measured, "-", "-", verdict(not failed and counts.get("passed", 0) > 0))


def failed_tests(log: str) -> list[str]:
    return sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", log, re.M)))


def read_stages(out_dir: Path) -> list[dict]:
    stages = []
    try:
        text = (out_dir / "stages.tsv").read_text()
    except OSError:
        return stages
    for line in text.splitlines():
        name, status, rc, seconds, cap, *note = line.split("\t")
        stages.append(dict(name=name, status=status, rc=rc, seconds=int(seconds), cap=int(cap), note="".join(note)))
    return stages


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + ["| " + " | ".join(r) + " |"
                                                                                for r in rows]  # fmt: skip


def summary_command(out_dir: Path, dry_run: bool, elapsed: int | None) -> int:
    env = read_json(out_dir / "env.json") or {}
    stages = read_stages(out_dir)
    stage = {s["name"]: s for s in stages}
    try:
        log = (out_dir / "device_check.log").read_text(errors="replace")
    except OSError:
        log = ""
    lines = [tests_line(log, stage.get("gpu-tests"))]
    lines += loss_lines(read_json(out_dir / "bench_loss.json"), stage.get("loss"), env)
    lines += sampler_lines(read_json(out_dir / "bench_sampler.json"), stage.get("sampler"))
    lines += trainer_lines(read_json(out_dir / "bench_trainer.json"), stage.get("trainer"))

    packages = env.get("packages", {})
    md = [f"# r1fast device check, {env.get('date', time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))}", ""]
    if dry_run:
        md += ["**DRY RUN** (CPU, tiny shapes, Triton interpreter): it proves the plumbing; its figures and verdicts "
               "mean nothing.", ""]  # fmt: skip
    md += [f"- device: {env.get('gpu', 'unknown')}; driver {env.get('driver', 'unknown')}; CUDA {env.get('cuda', '?')};"
           f" {env.get('cpus', '?')} CPUs",
           f"- Python {env.get('python', '?')}; " + ", ".join(f"{d} {packages.get(d, '?')}" for d in
                                                              ("torch", "triton", "transformers")),
           "- peers: " + ", ".join(f"{d} {packages.get(d, '?')}" for d in PEERS),
           f"- r1fast._C: {env.get('r1fast_C', '?')}", ""]  # fmt: skip
    md += ["## Targets", ""]
    md += table(["target", "measured", "peer", "floor", "verdict"],
                [[x.target, x.measured, x.peer, x.floor, x.verdict] for x in lines])  # fmt: skip
    failing = failed_tests(log)
    if failing:
        md += ["", "Failed gpu tests: " + ", ".join(f"`{t}`" for t in failing[:20])]
    loss_rows = read_json(out_dir / "bench_loss.json") or []
    if loss_rows:
        md += ["", "## bench_loss rows", ""]
        md += table(["method", "N", "H", "ms", "floor ms", "x floor", "peak GiB"],
                    [[r["method"], str(r["N"]), str(r["H"]), *(["error: " + r["error"][:80], "", "", ""] if "error" in r
                      else [f"{r['ms']:.2f}", f"{r['floor_ms']:.2f}", f"{r['x_floor']:.2f}",
                            number(r["peak_extra_gib"], ".2f")])] for r in loss_rows])  # fmt: skip
    md += ["", "## Stages", ""]
    md += table(["stage", "status", "seconds", "cap s", "note"],
                [[s["name"], s["status"], str(s["seconds"]), str(s["cap"]), s["note"]] for s in stages])  # fmt: skip
    written = [name for name in ("bench_loss.json", "bench_sampler.json", "bench_trainer.json")
               if (out_dir / name).exists()]  # fmt: skip
    md += ["", f"JSON rows: {', '.join(written) or 'none'}; full log: device_check.log."]
    text = "\n".join(md) + "\n"
    (out_dir / "summary.md").write_text(text)

    not_ok = [s for s in stages if s["status"] != "ok"]
    verdicts = [x.verdict for x in lines]
    counts = {word: sum(v.startswith(word) for v in verdicts) for word in ("pass", "FAIL", "unmeasured")}
    stage_text = f"stages {len(stages) - len(not_ok)}/{len(stages)} ok"
    if not_ok:
        stage_text += " (" + "; ".join(f"{s['name']} {s['status']}" for s in not_ok) + ")"
    took = f" in {elapsed} s" if elapsed is not None else ""
    print(text)
    targets = "targets (meaningless in a dry run)" if dry_run else "targets"
    print(f"device_check{' DRY RUN' if dry_run else ''}: done{took}; {stage_text}; {targets} {counts['pass']} pass, "
          f"{counts['FAIL']} FAIL, {counts['unmeasured']} unmeasured; summary {out_dir / 'summary.md'}")
    return 1 if not_ok else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["env", "summary"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--elapsed", type=int, default=None, help="seconds the whole check took (for the last line)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "env":
        env_command(args.out_dir)
    else:
        sys.exit(summary_command(args.out_dir, args.dry_run, args.elapsed))


if __name__ == "__main__":
    main()
