"""r1fast: GRPO with fused Triton loss kernels, a paged KV-cache sampler and C++ rule-based rewards.

Public names are imported lazily, so `import r1fast` stays cheap and a CPU-only machine never touches Triton
until a kernel is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # loss (Triton on CUDA, reference elsewhere)
    "grpo_loss": "r1fast.loss",
    "fused_linear_grpo_loss": "r1fast.loss",
    "fused_linear_logprobs": "r1fast.loss",
    "selective_log_softmax": "r1fast.loss",
    "GRPOLoss": "r1fast.loss",
    "LogitTransform": "r1fast.logit_transform",  # a model's own transform of its logits, read from its config
    # advantages
    "group_advantages": "r1fast.advantages",
    # sampler
    "Sampler": "r1fast.sampler",
    "SamplingParams": "r1fast.sampler",
}

_SUBMODULES = ("reference", "loss", "logit_transform", "advantages", "rewards", "sampler", "kernels", "trainer")

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"r1fast.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'r1fast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
