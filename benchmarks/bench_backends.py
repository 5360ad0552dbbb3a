"""One actor loss step (log-probs + entropy of the completion tokens from the final hidden states, the policy loss,
fwd+bwd) inside each host, with the host's own path and with r1fast's (r1fast.integrations.verl / .openrlhf), on the
same inputs, next to the 6NHV floor measured in the same run.

    python benchmarks/bench_backends.py            # CUDA: N = 8192 tokens x the 0.5B shape (H = 896, V = 151,936)
    python benchmarks/bench_backends.py --smoke    # any machine: tiny shapes, checks the script runs (no timings)

Rows, for each host importable in this environment (verl and OpenRLHF pin clashing versions: run it once in each
host's environment):
- verl: the eager head (logits, verl's logprobs_from_logits and entropy_from_logits) + verl's vanilla loss; verl's
  use_fused_kernels paths: its torch FusedLinearForPPO and (CUDA) its Triton linear_cross_entropy, + verl's vanilla
  loss; r1fast's linear_cross_entropy + r1fast's vanilla loss (what install() puts in verl).
- OpenRLHF: the eager head (logits, OpenRLHF's log_probs_from_logits) + its PolicyLoss, and + R1FastPolicyLoss (what
  patch() puts in OpenRLHF; r1fast does not replace OpenRLHF's head).
Floor: 6NHV (the head's forward, d hidden and d weight) / the bf16 matmul rate measured in the same run. Peak extra
memory: peak allocated during the call minus what was allocated before it. Prints one table and writes the same rows
to benchmarks/out/bench_backends.json (--json), rewritten after every row.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loss import measure_floors, timed, write_table  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
SHAPE = (8192, 896, 151_936)  # N tokens, H, V: Qwen2.5-0.5B's head
SEQ_LEN = 512


def make_inputs(n: int, h: int, v: int, device: torch.device, dtype: torch.dtype):
    b, t = max(1, n // SEQ_LEN), min(n, SEQ_LEN)
    hidden = (torch.randn(b, t, h, device=device) * 0.5).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, device=device) / h**0.5).to(dtype).requires_grad_()
    ids = torch.randint(0, v, (b, t), device=device)
    lengths = torch.randint(t // 4, t + 1, (b,), device=device)
    mask = torch.arange(t, device=device)[None] < lengths[:, None]
    adv = torch.randn(b, 1, device=device).expand(b, t).contiguous()
    old = -torch.rand(b, t, device=device) * 3
    return hidden, weight, ids, mask, adv, old


def _step(head: Callable, loss: Callable, hidden, weight) -> Callable[[], None]:
    def run():
        hidden.grad = weight.grad = None
        logp, entropy = head()
        value = loss(logp)
        if entropy is not None:
            value = value - 0.0 * entropy.float().mean()  # the actor's entropy term (coefficient 0 keeps it in graph)
        value.backward()

    return run


def verl_methods(hidden, weight, ids, mask, adv, old, backend: str) -> dict[str, Callable[[], None]]:
    import verl.trainer.ppo.core_algos as core_algos
    import verl.utils.kernel.linear_cross_entropy as verl_lce
    import verl.utils.torch_functional as verl_F
    from verl.utils.experimental.torch_functional import FusedLinearForPPO
    from verl.workers.config import ActorConfig

    from r1fast.integrations import verl as r1verl

    r1verl.uninstall()
    config = ActorConfig(strategy="fsdp", rollout_n=8, ppo_micro_batch_size_per_gpu=1, clip_ratio_low=0.2,
                         clip_ratio_high=0.28)  # fmt: skip
    b, t = ids.shape

    def loss_with(fn):
        return lambda logp: fn(old, logp.reshape(b, t), adv, mask, "token-mean", config)[0]

    def eager():
        logits = (hidden @ weight.t()).float()
        return verl_F.logprobs_from_logits(logits, ids), verl_F.entropy_from_logits(logits)

    methods = {
        "verl eager head + vanilla": _step(eager, loss_with(core_algos.compute_policy_loss_vanilla), hidden, weight),
        "verl FusedLinearForPPO + vanilla": _step(lambda: FusedLinearForPPO()(hidden, weight, ids),
                                                  loss_with(core_algos.compute_policy_loss_vanilla), hidden, weight),
    }  # fmt: skip
    if hidden.is_cuda:
        kernel = verl_lce.linear_cross_entropy
        methods["verl linear_cross_entropy (Triton) + vanilla"] = _step(
            lambda: kernel(hidden, weight, ids, 1.0, "none"), loss_with(core_algos.compute_policy_loss_vanilla),
            hidden, weight,
        )  # fmt: skip
    methods["r1fast linear_cross_entropy + vanilla"] = _step(
        lambda: r1verl.linear_logprobs_entropy(hidden, weight, ids, backend=backend),
        loss_with(r1verl.compute_policy_loss_vanilla), hidden, weight,
    )  # fmt: skip
    return methods


def _openrlhf_loss_module():
    """openrlhf.models.loss; without flash_attn (a CUDA build the package's __init__ imports through the actor) the
    package is entered without running its __init__."""
    import openrlhf

    if "openrlhf.models" not in sys.modules and importlib.util.find_spec("flash_attn") is None:
        package = types.ModuleType("openrlhf.models")
        package.__path__ = [os.path.join(os.path.dirname(openrlhf.__file__), "models")]
        sys.modules["openrlhf.models"] = package
    import openrlhf.models.loss as host_loss
    import openrlhf.models.utils as host_utils

    return host_loss, host_utils


def openrlhf_methods(hidden, weight, ids, mask, adv, old, backend: str) -> dict[str, Callable[[], None]]:
    host_loss, host_utils = _openrlhf_loss_module()
    from r1fast.integrations import openrlhf as r1orl

    action_mask = mask.float()

    def loss_with(cls):
        module = cls(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=3.0)
        return lambda logp: module(logp.reshape(ids.shape), old, adv, action_mask)[0]

    def eager():
        return host_utils.log_probs_from_logits((hidden @ weight.t()).float(), ids), None

    return {
        "openrlhf eager head + PolicyLoss": _step(eager, loss_with(host_loss.PolicyLoss), hidden, weight),
        "openrlhf eager head + R1FastPolicyLoss": _step(eager, loss_with(r1orl.R1FastPolicyLoss), hidden, weight),
    }


HOSTS = {"verl": ("verl", verl_methods), "openrlhf": ("openrlhf", openrlhf_methods)}


def run(n: int, h: int, v: int, device: torch.device, dtype: torch.dtype, backend: str, reps: int) -> Iterator[dict]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    inputs = make_inputs(n, h, v, device, dtype)
    _, rate = measure_floors(n, h, v, device, dtype)
    floor_ms = 6 * n * h * v / rate * 1e3
    for host, (package, methods) in HOSTS.items():
        base = dict(host=host, device=name, N=n, H=h, V=v, dtype=str(dtype).removeprefix("torch."), floor="6NHV",
                    floor_ms=floor_ms)  # fmt: skip
        if importlib.util.find_spec(package) is None:
            yield dict(base, method=f"{host}: not installed", error="not installed (run in the host's environment)")
            continue
        try:
            table = methods(*inputs, backend=backend)
        except Exception as err:  # a host's API drift must not hide the other host's rows
            yield dict(base, method=host, error=f"{type(err).__name__}: {err}"[:120])
            continue
        for method, fn in table.items():
            row = dict(base, method=method)
            try:
                row["ms"], row["peak_extra_gib"] = timed(fn, device, reps)
                row["x_floor"] = row["ms"] / row["floor_ms"]
            except torch.OutOfMemoryError:
                row["error"] = "out of memory"
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:120]
            if device.type == "cuda":
                torch.cuda.empty_cache()
            yield row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on any device; times are meaningless")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", type=Path, default=OUT / "bench_backends.json", help="where the rows go")
    args = parser.parse_args()
    if args.smoke:
        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        measured = run(16, 32, 129, device, torch.float32, "triton", 1)
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_backends.py needs a CUDA GPU (use --smoke to check the script on CPU)")
        measured = run(*SHAPE, torch.device("cuda"), torch.bfloat16, "auto", args.reps)
    write_table(measured, args.json, "loss: PPO clip 0.2/0.28, token-mean")


if __name__ == "__main__":
    main()
