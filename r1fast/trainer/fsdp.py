"""Sharded training with PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``): models larger than one GPU.

Each decoder layer is one FSDP unit and the whole model (embeddings, final norm, LM head) the root unit. A rank
holds 1/world of every parameter, gradient and AdamW moment; a unit's parameters are all-gathered (in
``param_dtype``) just before it runs and freed after, gradients are reduce-scattered (in float32) and averaged over
ranks, which is the data-parallel average TRL's loss normalisers assume.

The fused LM-head loss reads the head's weight outside any module forward, so the hidden states come from the root
module's own forward (``forward_hidden``): FSDP keeps the root unit gathered after its forward (it is needed again
at once for the backward), so the head's weight is a whole tensor when the loss reads it, and its gradient flows
into FSDP's reduce-scatter like any other.

The rollout. The sampler's functional forward calls the layers' submodules (q_proj, mlp, ...) rather than the
layers' forwards, which FSDP's hooks watch, so ``rollout_weights`` gathers for it, in one of two modes
(``fsdp_rollout_gather``):

- "model": every unit is all-gathered once for the rollout and freed after it (``gathered``). The KV pool, sized
  inside the gather (default: half the free memory then), leaves the gathered weights their room; the pool stays
  allocated across steps (unless free_kv_cache) and the room of the gathered weights, freed after each rollout, is
  there again at the next.
- "layer": the root unit is gathered for the whole rollout (embeddings, final norm and head: small next to the
  layers, and read once per forward at both ends); the layers are streamed by ``LayerStreamer`` through the
  sampler's forward, each gathered just before it runs and freed after, the next one's gather in flight while it
  computes (one-layer prefetch). The KV pool leaves room for two gathered layers (current + prefetch): the runner's
  reserved_bytes. CUDA graphs are off (collectives cannot be captured).

"auto" (``rollout_gather_mode``) picks "model" where it fits: on CUDA when the gathered model plus the free memory
a rollout's KV pool needs plus the AdamW state still to come fit in the free memory of the fullest rank; on CPU
always.

Lockstep of "layer". Gathers are collectives, but ranks generate different prompts and so run different numbers
of forwards. Every streamed forward opens with one all_reduce of 1 ("a real forward"); a rank whose rollout is done
enters ``LayerStreamer.finish``: it all_reduces 0 and, while the sum is > 0 (someone still computes), runs the same
gathers and frees of every layer, in the same order (the same generator), without computing; when the sum is 0
every rank is done, and all leave at that same collective.

Bytes moved per rank, for P parameters (P_layers of them in the decoder layers, P_root = P - P_layers) and W ranks
(b = bytes of param_dtype, 2 for bf16):
- rollout, "model": one gather P*b*(W-1)/W per rollout. "layer": the root's gather P_root*b*(W-1)/W once per
  rollout, then P_layers*b*(W-1)/W every forward, i.e. every prefill and every decode step (a decode chunk of K
  steps is K forwards), plus an 8-byte all_reduce per forward. For a 7B model (P_layers 6.5 B) on 8 ranks in bf16:
  13.3 GB per rollout against 11.4 GB per decode step: "layer" is for models whose gathered copy does not fit.
- training: each forward and its backward gather P*b*(W-1)/W each (layers are freed after their forward); each
  micro-batch's gradient reduce-scatter 4P*(W-1)/W (float32). Old and reference log-probs add one gather per
  micro-batch each.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
ROLLOUT_GATHERS = ("auto", "model", "layer")


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


def gathered_bytes(params: Iterable[torch.nn.Parameter], param_dtype: str) -> int:
    """Bytes the parameters take gathered: whole (a sharded parameter's global shape) in param_dtype (a DTYPES key,
    or "auto" for each parameter's own dtype)."""
    size = lambda p: (p.dtype if param_dtype == "auto" else DTYPES[param_dtype]).itemsize  # noqa: E731
    return sum(p.numel() * size(p) for p in params)


class LayerStreamer:
    """The decoder layers of a sharded model for the sampler's forward, one gathered at a time with the next one's
    gather in flight (the runner's weight_streamer in fsdp_rollout_gather="layer"; see the module docstring for the
    lockstep of the ranks). The root unit must be gathered by the caller (rollout_weights does it).

    model: a model sharded by shard_model; param_dtype: its shard_model param_dtype (sizes the reservation).
    reserved_bytes: the device memory two gathered layers take (the current and the prefetched one), which the KV
    pool leaves free. num_idle_forwards: the forwards of other ranks this rank followed in finish(), without work."""

    def __init__(self, model: torch.nn.Module, param_dtype: str) -> None:
        self.layers = list(decoder_layers(model))
        self.device = next(iter(model.parameters())).device
        self.reserved_bytes = 2 * max(gathered_bytes(layer.parameters(), param_dtype) for layer in self.layers)
        self.num_idle_forwards = 0

    def _ranks_computing(self, computing: bool) -> torch.Tensor:
        """All-reduces 1 (this rank runs a forward) or 0 (it is done): the number of ranks computing, [1] int64 on
        the device (read it only when idle: a busy rank does not wait for it)."""
        import torch.distributed as dist

        flag = torch.full((1,), int(computing), dtype=torch.int64, device=self.device)
        dist.all_reduce(flag)
        return flag

    def _gather_each(self) -> Iterator[torch.nn.Module]:
        """Each layer whole while the caller holds it, freed when the caller asks for the next; layer i+1's gather
        is issued before layer i's is waited for. Every rank runs exactly this sequence of collectives per forward."""
        pending = self.layers[0].unshard(async_op=True)
        for i, layer in enumerate(self.layers):
            prefetch = self.layers[i + 1].unshard(async_op=True) if i + 1 < len(self.layers) else None
            pending.wait()
            yield layer
            layer.reshard()
            pending = prefetch

    def layers_gathered(self) -> Iterator[torch.nn.Module]:
        """The layers of one real forward, in order, each whole while the forward holds it."""
        self._ranks_computing(True)
        yield from self._gather_each()

    def finish(self) -> None:
        """Called by every rank when its rollout is done: follows the other ranks' forwards (the same gathers, no
        compute) until no rank computes. Returns on every rank at the same collective."""
        while int(self._ranks_computing(False).item()):
            self.num_idle_forwards += 1
            for _ in self._gather_each():
                pass


@contextmanager
def rollout_weights(model: torch.nn.Module, runner: Any, mode: str, param_dtype: str
                    ) -> Iterator[LayerStreamer | None]:  # fmt: skip
    """Inside: the sampler on `runner` (an r1fast ModelRunner on `model`) can run a sharded model. mode "model":
    every unit gathered (``gathered``); "layer": the root unit gathered and the layers streamed (a LayerStreamer set
    as the runner's weight_streamer, yielded), and on leaving, the rank follows the other ranks' forwards until
    every rank is done (LayerStreamer.finish). Every rank must enter and leave (collectives); a rank that raises
    inside leaves without following the others (they then fail at the process group's timeout). param_dtype: the
    model's shard_model param_dtype. The identity (yields None) for a model that is not sharded."""
    if mode not in ("model", "layer"):
        raise ValueError(f"mode must be 'model' or 'layer', got {mode!r}")
    if not is_sharded(model) or mode == "model":
        with gathered(model):
            yield None
        return
    streamer = LayerStreamer(model, param_dtype)
    model.unshard()  # the root unit only (unshard is not recursive)
    runner.weight_streamer = streamer
    try:
        yield streamer
        streamer.finish()
    finally:
        runner.weight_streamer = None
        model.reshard()


def check_rollout_gather(value: str) -> None:
    """ValueError unless `value` is one of ROLLOUT_GATHERS (the fsdp_rollout_gather key)."""
    if value not in ROLLOUT_GATHERS:
        raise ValueError(f"fsdp_rollout_gather must be one of {ROLLOUT_GATHERS}, got {value!r}")


def rollout_gather_mode(requested: str, model: torch.nn.Module, sampler: Any, param_dtype: str, *, sequences: int,
                        tokens: int) -> str:  # fmt: skip
    """fsdp_rollout_gather resolved: "model" or "layer" as asked; "auto": "model" on CPU, and on CUDA when

        gathered model + KV room + AdamW state <= free memory (the smallest over ranks: one all_reduce),

    else "layer". The KV room: see kv_room (sequences, tokens: a full rollout batch). The AdamW state (two moments
    of this rank's trainable shards) is counted as taken: it is allocated at the first step, before the second
    rollout. An unsharded model: "model". Every rank must call it (the all_reduce). Raises ValueError for an unknown
    mode."""
    check_rollout_gather(requested)
    if not is_sharded(model):
        return "model"
    if requested != "auto":
        return requested
    device = next(iter(model.parameters())).device
    if device.type != "cuda":
        return "model"
    import torch.distributed as dist

    free = torch.tensor([torch.cuda.mem_get_info(device)[0]], dtype=torch.int64, device=device)
    dist.all_reduce(free, op=dist.ReduceOp.MIN)
    trainable = [p for p in model.parameters() if p.requires_grad]
    adamw = 2 * sum(local_shard(p).numel() * p.dtype.itemsize for p in trainable)
    other = kv_room(sampler, sequences, tokens) + adamw
    return choose_rollout_gather(gathered_bytes(model.parameters(), param_dtype), other, int(free.item()))


def kv_room(sampler: Any, sequences: int, tokens: int) -> int:
    """The free device memory (bytes) the sampler's KV pool needs for a rollout: its kv_cache_memory when set, else
    what its default pool (GPU_MEMORY_FRACTION of the free memory) needs to hold min(sequences, max_num_seqs)
    sequences of `tokens` tokens (capped at max_model_len) at once, without preemption."""
    from r1fast.sampler.sampler import GPU_MEMORY_FRACTION

    if sampler.kv_cache_memory is not None:
        return sampler.kv_cache_memory
    blocks = math.ceil(min(tokens, sampler.max_model_len) / sampler.block_size)
    pool = min(sequences, sampler.max_num_seqs) * blocks * sampler.runner.bytes_per_block(sampler.block_size)
    return math.ceil(pool / GPU_MEMORY_FRACTION)


def choose_rollout_gather(gathered: int, other: int, free: int) -> str:
    """The rollout's gather: "model" when the gathered model's bytes and the `other` bytes the rollout and training
    need fit in `free` bytes, else "layer"."""
    return "model" if gathered + other <= free else "layer"


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


def local_shard(x: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard; any other tensor as is."""
    from torch.distributed.tensor import DTensor

    return x.to_local() if isinstance(x, DTensor) else x
