"""LoRA through PEFT: the policy is a ``peft.PeftModel``; only its adapters train and are saved.

The sampler runs the base Hugging Face model (``base_model``) as is: PEFT replaced its targeted Linear layers by
LoRA layers whose forward adds the low-rank term (x @ A^T @ B^T * alpha / r) to the frozen base projection, and the
sampler's functional forward calls those layers, so generation sees the adapters without a merge and without a copy.
The KL reference (beta > 0) is the same model with its adapters disabled (``adapters_disabled``): the base weights,
no second copy.

peft is imported only when LoRA is used (``pip install r1fast[lora]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def _peft():
    try:
        import peft
    except ImportError:
        raise ImportError("LoRA needs PEFT: pip install peft (or r1fast[lora])") from None
    return peft


def is_peft_model(model: Any) -> bool:
    """Whether model is a peft.PeftModel (without importing peft when it was never imported)."""
    import sys

    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def apply_lora(model: torch.nn.Module, r: int, alpha: float, target_modules: Sequence[str] | str | None = None,
               dropout: float = 0.0, *, seed: int = 0) -> torch.nn.Module:  # fmt: skip
    """The model wrapped as a peft.PeftModel with LoRA adapters of rank r on target_modules (module names such as
    "q_proj", or "all-linear"; None: PEFT's default for the model type), scaled by alpha / r, B initialised to zero
    (so the wrapped model computes exactly what the model computed) and A drawn from `seed` (the global random state
    is left as it was). The base weights are frozen in place (no copy). Raises ValueError for r < 1, alpha <= 0,
    dropout outside [0, 1), unknown target modules, or a model that is a PeftModel already."""
    if not (isinstance(r, int) and not isinstance(r, bool) and r >= 1):
        raise ValueError(f"lora_r must be an int >= 1, got {r!r}")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"lora_alpha must be a number > 0, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"lora_dropout must be in [0, 1), got {dropout!r}")
    if is_peft_model(model):
        raise ValueError("the model is a PeftModel already: pass it without lora_r (its adapters are trained)")
    peft = _peft()
    targets = list(target_modules) if isinstance(target_modules, (list, tuple)) else target_modules
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, bias="none",
                             task_type="CAUSAL_LM")  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return peft.get_peft_model(model, config)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face causal LM under a PeftModel (its LoRA layers in place, so its forward applies the adapters);
    any other model as is."""
    return model.get_base_model() if is_peft_model(model) else model


@contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[None]:
    """Inside: a PeftModel computes its base model's function (adapters off); nothing for any other model."""
    if not is_peft_model(model):
        yield
        return
    with model.disable_adapter():
        yield


def adapter_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors of a PeftModel under PEFT's saved names (what PeftModel.from_pretrained loads)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Loads adapter_tensors' output into a PeftModel. Raises ValueError naming missing or unexpected tensors."""
    from peft.utils import set_peft_model_state_dict

    expected = set(adapter_tensors(model))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(f"the adapters do not match the model's: missing {missing[:5]}, unexpected {unexpected[:5]}")
    set_peft_model_state_dict(model, tensors)
