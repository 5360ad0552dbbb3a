"""Sharded training with PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``): models larger than one GPU.

Each decoder layer is one FSDP unit and the whole model (embeddings, final norm, LM head) the root unit. A rank
holds 1/world of every parameter, gradient and AdamW moment; a unit's parameters are all-gathered (in
``param_dtype``) just before it runs and freed after, gradients are reduce-scattered (in float32) and averaged over
ranks, which is the data-parallel average TRL's loss normalisers assume.

The fused LM-head loss reads the head's weight outside any module forward, so the hidden states come from the root
module's own forward (``forward_hidden``): FSDP keeps the root unit gathered after its forward (it is needed again
at once for the backward), so the head's weight is a whole tensor when the loss reads it, and its gradient flows
into FSDP's reduce-scatter like any other.

The sampler's functional forward calls the layers' submodules (q_proj, mlp, ...) rather than the layers'
forwards, which FSDP's hooks watch: ``gathered`` all-gathers every unit for the rollout and frees them after.

Bytes moved per rank and step, for P parameters and W ranks (b = bytes of param_dtype, 2 for bf16): the rollout's
gather P*b*(W-1)/W; each training forward and its backward gather P*b*(W-1)/W each (layers are freed after their
forward); each micro-batch's gradient reduce-scatter 4P*(W-1)/W (float32). Old and reference log-probs add one
gather per micro-batch each.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _fsdp():
    from torch.distributed import fsdp

    return fsdp


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of a Hugging Face causal LM (``model.model.layers``); ValueError when it has none."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise ValueError(f"{type(model).__name__} has no decoder layers at model.model.layers: FSDP shards a Hugging "
                         "Face causal LM (llama, mistral, qwen2, qwen3)")  # fmt: skip
    return layers


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether fully_shard was applied to the model (it is the FSDP root)."""
    return isinstance(model, _fsdp().FSDPModule)


def shard_model(model: torch.nn.Module, param_dtype: str = "bfloat16") -> torch.nn.Module:
    """Shards `model` in place over the default process group: fully_shard on every decoder layer, then on the
    model. param_dtype: the dtype the gathered parameters (and so the forward) use, one of DTYPES, or "auto" for the
    parameters' own dtype; gradients are reduced in float32; the sharded parameters keep their dtype (load the model
    in float32 for float32 master weights and optimizer state). Returns the model (its class becomes FSDP<class>).

    Raises RuntimeError without an initialised process group, ValueError for an unknown param_dtype or a model
    without decoder layers, or one already sharded."""
    import torch.distributed as dist

    fsdp = _fsdp()
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("FSDP needs torch.distributed: run under torchrun (or call init_process_group first)")
    if param_dtype != "auto" and param_dtype not in DTYPES:
        raise ValueError(f"fsdp_param_dtype must be 'auto' or one of {sorted(DTYPES)}, got {param_dtype!r}")
    if is_sharded(model):
        raise ValueError("the model is sharded already (fully_shard was applied)")
    policy = fsdp.MixedPrecisionPolicy(param_dtype=None if param_dtype == "auto" else DTYPES[param_dtype],
                                       reduce_dtype=torch.float32)  # fmt: skip
    for layer in decoder_layers(model):
        fsdp.fully_shard(layer, mp_policy=policy)
    fsdp.fully_shard(model, mp_policy=policy)
    return model


def units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every FSDP unit of the model: its layers, then the root."""
    return [m for m in model.modules() if isinstance(m, _fsdp().FSDPModule)][::-1]


@contextmanager
def gathered(model: torch.nn.Module) -> Iterator[None]:
    """Inside: every parameter of a sharded model is a whole plain tensor (in the param dtype) on every rank, as the
    sampler's functional forward needs; freed again on exit. Every rank must enter (the gathers are collectives).
    The identity for a model that is not sharded."""
    if not is_sharded(model):
        yield
        return
    modules = units(model)
    for module in modules:
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()


def forward_hidden(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The final hidden states [B, L, H] (after the last norm) of a sharded model, from the root's own forward so
    that FSDP gathers and reduces what it must. input_ids: [B, L] int64. The LM head runs on the last position only
    ([B, 1, V], discarded). The root unit (embeddings, final norm, LM head) stays gathered after it, so that the
    fused loss reads the head's whole weight; the backward frees it, or, without one, the caller (model.reshard())."""
    with warnings.catch_warnings():  # FSDP warns that the outputs include views (nothing here writes into them)
        warnings.filterwarnings("ignore", message=".*returned a view tensor.*")
        out = model(input_ids=input_ids, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1]


def full_tensor(x: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (a collective: every rank must call it); any other tensor as is."""
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x
