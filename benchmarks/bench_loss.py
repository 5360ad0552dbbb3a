"""GRPO loss fwd+bwd: r1fast (logits given; fused LM head) vs eager PyTorch, TRL 1.16's fused LM-head log-probs,
Liger's triton_grpo_loss and LigerFusedLinearGRPOLoss, next to the physical floor measured in the same run.

    python benchmarks/bench_loss.py            # CUDA: the full table (N = 8192, H in {896, 1536, 3584}; N = 65536)
    python benchmarks/bench_loss.py --shapes 8192x1536 --json out.json   # CUDA: one shape, rows to out.json
    python benchmarks/bench_loss.py --smoke    # any machine: tiny shapes, checks the script runs (times meaningless)

Floors: logits-given = 3 passes over the bf16 logits (read; read + write) / measured copy bandwidth; fused =
6NHV / measured bf16 matmul rate; no-grad log-probs = 2NHV / the same rate. Peak extra memory = peak allocated
during the call minus what was allocated before it (inputs and outputs included in neither).
Prints one table, a row as it is measured, and writes the same rows to benchmarks/out/bench_loss.json (--json),
rewritten after every row so that a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "out"
VOCAB = 151_936
SHAPES = [(8192, 896), (8192, 1536), (8192, 3584), (65536, 1536)]  # (N tokens, H)
SEQ_LEN = 512  # tokens per completion (B = N / SEQ_LEN)
CONFIG = dict(loss_type="dapo", beta=0.04, epsilon=0.2, epsilon_high=0.28, temperature=1.0)
SOFTCAP = 30.0  # Gemma2's final_logit_softcapping


def timed(fn: Callable[[], None], device: torch.device, reps: int) -> tuple[float, float]:
    """(median ms, peak extra GiB) of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if device.type == "cuda" else float("nan")
    return sorted(times)[len(times) // 2], peak


def measure_floors(n: int, h: int, v: int, device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """(copy bandwidth bytes/s, matmul FLOP/s) measured on this device."""
    src = torch.empty(min(n * v, 1 << 29), dtype=dtype, device=device)
    dst = torch.empty_like(src)
    ms, _ = timed(lambda: dst.copy_(src), device, 5)
    bandwidth = 2 * src.numel() * src.element_size() / (ms * 1e-3)
    rows = min(n, 4096)
    a = torch.randn(rows, h, device=device, dtype=dtype)
    w = torch.randn(v, h, device=device, dtype=dtype)
    ms, _ = timed(lambda: a @ w.t(), device, 5)
    rate = 2 * rows * h * v / (ms * 1e-3)
    return bandwidth, rate


def make_inputs(n: int, h: int, v: int, device: torch.device, dtype: torch.dtype):
    b, t = max(1, n // SEQ_LEN), min(n, SEQ_LEN)
    hidden = (torch.randn(b, t, h, device=device) * 0.5).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, device=device) / h**0.5).to(dtype).requires_grad_()
    ids = torch.randint(0, v, (b, t), device=device)
    lengths = torch.randint(t // 4, t + 1, (b,), device=device)
    mask = (torch.arange(t, device=device)[None] < lengths[:, None]).float()
    adv = torch.randn(b, device=device)
    old = -torch.rand(b, t, device=device) * 3
    ref = old + 0.1 * torch.randn_like(old)
    return hidden, weight, ids, mask, adv, old, ref


def methods(hidden, weight, ids, mask, adv, old, ref, backend: str) -> dict[str, tuple[Callable[[], None], str]]:
    """name -> (fwd+bwd closure, floor kind). Peers that are not installed are left out."""
    import r1fast
    from r1fast import reference

    b, t, _ = hidden.shape
    with torch.no_grad():
        logits_data = hidden @ weight.t()

    def zero():
        for x in (hidden, weight):
            x.grad = None

    logits = logits_data.requires_grad_()  # stands in for the LM head output; d/dlogits is a new [N, V] buffer

    def r1_logits():
        logits.grad = None
        loss, _ = r1fast.grpo_loss(logits, ids, mask, adv, old, ref, backend=backend, **CONFIG)
        loss.backward()

    def r1_fused(**options):
        zero()
        loss, _ = r1fast.fused_linear_grpo_loss(hidden, weight, ids, mask, adv, old, ref, backend=backend, **CONFIG,
                                                **options)  # fmt: skip
        loss.backward()

    def r1_logprobs():
        r1fast.fused_linear_logprobs(hidden.detach(), weight.detach(), ids, return_entropy=True, backend=backend)

    def eager():
        zero()
        loss, _ = reference.grpo_loss(hidden @ weight.t(), ids, mask, adv, old, ref, **CONFIG)
        loss.backward()

    out = {
        "r1fast grpo_loss (logits given)": (r1_logits, "3-pass bytes"),
        "r1fast fused_linear_grpo_loss": (r1_fused, "6NHV"),
        # Gemma2's final_logit_softcapping: a tanh per element, forward and backward
        f"r1fast fused_linear_grpo_loss, softcap {SOFTCAP:g}": (lambda: r1_fused(logit_softcap=SOFTCAP), "6NHV"),
        # float32 logits from the bf16 head (twice the chunk bytes; bf16 GEMMs with float32 output)
        "r1fast fused_linear_grpo_loss, fp32 head": (lambda: r1_fused(fp32_head=True), "6NHV"),
        "r1fast fused_linear_logprobs+entropy (no grad)": (r1_logprobs, "2NHV"),
        "eager PyTorch (reference)": (eager, "6NHV"),
    }
    if hidden.is_cuda:
        try:
            from trl.kernels import ChunkedLogProbFunction

            policy_cfg = {k: x for k, x in CONFIG.items() if k != "temperature"}

            def trl_fused(softcap=None):
                zero()
                h2d = hidden.reshape(b * t, -1)
                logps = ChunkedLogProbFunction.apply(h2d, weight, None, ids.reshape(-1), 1.0, 4096, softcap, 1.0,
                                                     ("log_probs",))[0]  # fmt: skip
                loss, _ = reference.policy_loss(logps.view(b, t), mask, adv, old, ref, **policy_cfg)
                loss.backward()

            out["TRL 1.16 ChunkedLogProbFunction + loss"] = (trl_fused, "6NHV")
            out[f"TRL ChunkedLogProbFunction + loss, softcap {SOFTCAP:g}"] = (lambda: trl_fused(SOFTCAP), "6NHV")
        except ImportError:
            pass
        try:
            from liger_kernel.transformers.grpo_loss import triton_grpo_loss

            liger_in = torch.cat([logits_data, logits_data[:, -1:]], 1).requires_grad_()  # Liger wants T + 1 rows

            def liger_logits():  # inplace=True overwrites liger_in; later reps time the same work on other values
                liger_in.grad = None
                res = triton_grpo_loss(liger_in, old, ref, ids, adv, mask, temperature=1.0, beta=CONFIG["beta"],
                                       eps_low=0.2, eps_high=0.28, inplace=True)  # fmt: skip
                per_token = res[0] if isinstance(res, tuple) else res
                loss = per_token if per_token.dim() == 0 else (per_token * mask).sum() / mask.sum()
                loss.backward()

            out["Liger triton_grpo_loss"] = (liger_logits, "3-pass bytes")
        except ImportError:
            pass
        try:
            from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

            liger_module = LigerFusedLinearGRPOLoss(beta=CONFIG["beta"], epsilon_low=0.2, epsilon_high=0.28,
                                                    loss_type="dapo", use_ref_model=True)  # fmt: skip

            def liger_fused():
                zero()
                res = liger_module(hidden, weight, ids, mask, adv, ref_per_token_logps=ref, old_per_token_logps=old)
                (res[0] if isinstance(res, tuple) else res).backward()

            out["Liger LigerFusedLinearGRPOLoss"] = (liger_fused, "6NHV")
        except ImportError:
            pass
    return out


def run(shapes, vocab: int, device: torch.device, dtype: torch.dtype, backend: str, reps: int) -> Iterator[dict]:
    """The rows, one per (shape, method), each yielded as soon as it is measured."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    for n, h in shapes:
        inputs = make_inputs(n, h, vocab, device, dtype)
        bandwidth, rate = measure_floors(n, h, vocab, device, dtype)
        elem = torch.empty((), dtype=dtype).element_size()
        floors = {"3-pass bytes": 3 * n * vocab * elem / bandwidth, "6NHV": 6 * n * h * vocab / rate,
                  "2NHV": 2 * n * h * vocab / rate}  # fmt: skip
        for method, (fn, floor_kind) in methods(*inputs, backend=backend).items():
            row = dict(device=name, method=method, N=n, H=h, V=vocab, dtype=str(dtype).removeprefix("torch."),
                       floor=floor_kind, floor_ms=floors[floor_kind] * 1e3)  # fmt: skip
            try:
                row["ms"], row["peak_extra_gib"] = timed(fn, device, reps)
                row["x_floor"] = row["ms"] / row["floor_ms"]
            except torch.OutOfMemoryError:
                row["error"] = "out of memory"
            except Exception as err:  # a peer's API drift must not hide the other rows
                row["error"] = f"{type(err).__name__}: {err}"[:120]
            if device.type == "cuda":
                torch.cuda.empty_cache()
            yield row


def print_header(row: dict, loss: str) -> None:
    header = f"{'method':48} {'N':>6} {'H':>5} {'ms':>9} {'floor ms':>9} {'x floor':>8} {'peak GiB':>9}  floor"
    print(f"device: {row['device']}, V = {row['V']}, dtype = {row['dtype']}, {loss}")
    print(header)
    print("-" * len(header))


def write_table(measured: Iterator[dict], path: Path, loss: str) -> None:
    """Prints the rows as they come (under a header naming the device, V, dtype and `loss`) and rewrites `path`
    with every row so far after each, so an interrupted run keeps what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in measured:
        if not rows:
            print_header(row, loss)
        print_row(row)
        rows.append(row)
        path.write_text(json.dumps(rows, indent=1))
    print(f"wrote {path}")


def print_row(r: dict) -> None:
    if "error" in r:
        print(f"{r['method']:48} {r['N']:>6} {r['H']:>5}  {r['error']}", flush=True)
        return
    print(f"{r['method']:48} {r['N']:>6} {r['H']:>5} {r['ms']:>9.2f} {r['floor_ms']:>9.2f} {r['x_floor']:>8.2f} "
          f"{r['peak_extra_gib']:>9.2f}  {r['floor']}", flush=True)  # fmt: skip


def shape(text: str) -> tuple[int, int]:
    """'8192x1536' -> (N, H)."""
    n, _, h = text.lower().partition("x")
    return int(n), int(h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on any device; times are meaningless")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--shapes", nargs="+", type=shape, default=SHAPES, metavar="NxH",
                        help="token count x hidden size, e.g. 8192x1536 (default: the full table)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=OUT / "bench_loss.json", help="where the rows go")
    args = parser.parse_args()
    if args.smoke:
        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        measured = run([(64, 32)], 257, device, torch.float32, "triton", 1)
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_loss.py needs a CUDA GPU (use --smoke to check the script on CPU)")
        measured = run(args.shapes, VOCAB, torch.device("cuda"), torch.bfloat16, "auto", args.reps)
    write_table(measured, args.json, f"config = {CONFIG}")


if __name__ == "__main__":
    main()
