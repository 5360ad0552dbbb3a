"""Attention over the paged KV cache, and where each backend runs.

backend "auto": on CUDA, the Triton kernels of r1fast.kernels (store_kv, paged_attention_decode/_prefill) when the
head dim is one they support, and flash-attn (fp16/bf16, when it is installed) where it can serve the batch (see
flash_attention); elsewhere the vectorised PyTorch path below.
"triton": the Triton kernels everywhere (on CPU only under TRITON_INTERPRET=1). "torch": the vectorised PyTorch
path. "reference": r1fast.reference.paged_attention (a Python loop over sequences; the specification).

flash-attn's paged-KV entry points (flash_attn_with_kvcache and flash_attn_varlen_func with a block_table) need
block_size to be a multiple of 256. The sampler's blocks are small by default (16) so that forks share and copy
little; with them flash-attn serves only what reads no cache: a prefill of fresh prompts (no prefix-cache hit, no
recompute of a cached prefix). With block_size a multiple of 256 it serves decode and every prefill.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from r1fast import reference

BACKENDS = ("auto", "triton", "torch", "reference")


@dataclass
class Batch:
    """The packed tokens of one forward: S sequences, N tokens, on the model's device.

    input_ids, positions, slot_mapping: [N] int64 (slot = block * block_size + offset; -1 = write nothing);
    block_tables: [S, M] int32; context_lens: [S] int32 (tokens in cache after this step, the new ones included);
    query_start_loc: [S + 1] int32 (sequence s owns tokens query_start_loc[s]:query_start_loc[s + 1], which are its
    last positions). max_query_len: the longest query run; max_context_len: a bound on context_lens (host ints).
    fresh: every sequence's queries are its whole context (nothing was cached before this step). decode: exactly one
    query per sequence.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    query_start_loc: torch.Tensor
    max_query_len: int
    max_context_len: int
    fresh: bool
    decode: bool


FLASH_PAGE_MULTIPLE = 256  # flash-attn 2's paged KV needs page_block_size % 256 == 0
FLASH_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class FlashAttn:
    """The two flash-attn entry points the sampler calls (a seam: tests pass stand-ins)."""

    varlen: Callable
    with_kvcache: Callable


@functools.cache
def _flash_attn() -> FlashAttn | None:
    try:
        from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache
    except ImportError:  # optional dependency
        return None
    return FlashAttn(flash_attn_varlen_func, flash_attn_with_kvcache)


def flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, batch: Batch,
    scale: float, flash: FlashAttn,
) -> torch.Tensor | None:  # fmt: skip
    """attention() through flash-attn where it can serve the batch, else None (the caller falls back).

    Fresh prefill: flash_attn_varlen_func over the new k, v ([N, H_kv, D]; any block size). With block_size a
    multiple of FLASH_PAGE_MULTIPLE: decode through flash_attn_with_kvcache ([S, 1, H_q, D] queries over the paged
    cache, cache_seqlens = context_lens), other prefills through flash_attn_varlen_func with a block_table. The new
    tokens' K/V are already in the caches. Returns [N, H_q, D].
    """
    if batch.fresh:
        cu = batch.query_start_loc
        return flash.varlen(q, k, v, cu, cu, batch.max_query_len, batch.max_query_len, softmax_scale=scale,
                            causal=True)  # fmt: skip
    if k_cache.shape[1] % FLASH_PAGE_MULTIPLE:
        return None
    if batch.decode:
        out = flash.with_kvcache(q[:, None], k_cache, v_cache, cache_seqlens=batch.context_lens,
                                 block_table=batch.block_tables, softmax_scale=scale, causal=True)  # fmt: skip
        return out[:, 0]
    cu_k = torch.nn.functional.pad(batch.context_lens.cumsum(0, dtype=torch.int32), (1, 0))
    return flash.varlen(q, k_cache, v_cache, batch.query_start_loc, cu_k, batch.max_query_len, batch.max_context_len,
                        softmax_scale=scale, causal=True, block_table=batch.block_tables)  # fmt: skip


@functools.cache
def _kernel_head_dims() -> tuple[int, ...]:
    from r1fast.kernels.paged_attention import SUPPORTED_HEAD_DIMS  # imports triton: only when it may run

    return tuple(SUPPORTED_HEAD_DIMS)


def use_triton(backend: str, device: torch.device, head_dim: int) -> bool:
    """Whether `backend` runs the Triton kernels for tensors on `device` with this head dim."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    return backend == "triton" or (backend == "auto" and device.type == "cuda" and head_dim in _kernel_head_dims())


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
    triton: bool,
) -> None:  # fmt: skip
    """Write k[i], v[i] ([N, H_kv, D]) into the caches ([num_blocks, block_size, H_kv, D]) at slot_mapping[i] ([N]
    int64). In place. Slot -1 writes nothing that is read: the Triton path skips it (and is CUDA-graph capturable);
    the PyTorch path writes it into the caches' last slot, which the sampler's pool keeps as scratch
    (ModelRunner.allocate)."""
    if triton:
        from r1fast.kernels.kv_store import store_kv as kernel

        kernel(k, v, k_cache, v_cache, slot_mapping)
        return
    k_cache.view(-1, *k_cache.shape[2:])[slot_mapping] = k.to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slot_mapping] = v.to(v_cache.dtype)


def torch_paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """r1fast.reference.paged_attention, vectorised over sequences (same arguments, same result up to rounding).

    Each sequence's context is gathered into a padded [S, L, H_kv, D] tensor (L = the longest context) and its
    queries into [S, Q, H_q, D] (Q = the longest query run); positions past a context are masked, and never read
    through the block table (so its entries there may be anything). Softmax in float32. Returns [N_q, H_q, D].
    """
    n_q, h_q, d = q.shape
    s = block_tables.shape[0]
    block_size, h_kv = k_cache.shape[1], k_cache.shape[2]
    if n_q == 0 or s == 0:
        return torch.empty_like(q)
    device = q.device
    ctx = context_lens.long()
    starts = query_start_loc.long()
    q_lens = starts[1:] - starts[:-1]
    max_ctx, max_q = int(ctx.max()), int(q_lens.max())

    pos = torch.arange(max_ctx, device=device)
    valid = pos[None, :] < ctx[:, None]  # [S, L]
    page = (pos // block_size).clamp(max=block_tables.shape[1] - 1).expand(s, -1)
    blocks = block_tables.long().gather(1, page).masked_fill(~valid, 0)
    offsets = (pos % block_size).expand(s, -1)
    k = k_cache[blocks, offsets].float()  # [S, L, H_kv, D]
    v = v_cache[blocks, offsets].float().masked_fill(~valid[:, :, None, None], 0.0)  # unused rows may hold NaN

    row = torch.arange(max_q, device=device)
    q_valid = row[None, :] < q_lens[:, None]  # [S, Q]
    token = (starts[:-1, None] + row[None, :]).masked_fill(~q_valid, 0)
    qs = q[token].float().view(s, max_q, h_kv, h_q // h_kv, d)  # [S, Q, H_kv, G, D]
    scores = torch.einsum("sqhgd,slhd->shgql", qs, k) * scale
    q_pos = ctx[:, None] - q_lens[:, None] + row[None, :]  # [S, Q] absolute positions of the queries
    allowed = (pos[None, None, :] <= q_pos[:, :, None]) & valid[:, None, :]  # [S, Q, L]
    scores = scores.masked_fill(~allowed[:, None, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num_(0.0)  # padded query rows see no key: all -inf -> NaN -> 0
    out = torch.einsum("shgql,slhd->sqhgd", probs, v).reshape(s, max_q, h_q, d)
    return out[q_valid].to(q.dtype)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    batch: Batch,
    scale: float,
    backend: str,
) -> torch.Tensor:
    """Causal attention of the batch's queries over their paged contexts; k, v are the new tokens' keys/values.

    q: [N, H_q, D]; k, v: [N, H_kv, D] (already rotated), stored into the caches here before attending.
    Returns [N, H_q, D] in q's dtype.
    """
    triton = use_triton(backend, q.device, q.shape[-1])
    store_kv(k, v, k_cache, v_cache, batch.slot_mapping, triton)
    if backend == "reference":
        return reference.paged_attention(q, k_cache, v_cache, batch.block_tables, batch.context_lens,
                                         batch.query_start_loc, scale)  # fmt: skip
    flash = _flash_attn() if backend == "auto" and q.is_cuda and q.dtype in FLASH_DTYPES else None
    out = None if flash is None else flash_attention(q, k, v, k_cache, v_cache, batch, scale, flash)
    if out is not None:
        return out
    if triton:
        from r1fast.kernels import paged_attention as kernels

        if batch.decode:
            return kernels.paged_attention_decode(q, k_cache, v_cache, batch.block_tables, batch.context_lens, scale)
        return kernels.paged_attention_prefill(q, k_cache, v_cache, batch.block_tables, batch.context_lens,
                                               batch.query_start_loc, scale)  # fmt: skip
    return torch_paged_attention(q, k_cache, v_cache, batch.block_tables, batch.context_lens,
                                 batch.query_start_loc, scale)  # fmt: skip
