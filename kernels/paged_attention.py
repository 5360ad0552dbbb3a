"""Paged-attention decode: one query token per sequence attends over its KV blocks.

One program per (sequence, kv head) handles all H_q / H_kv query heads of that kv head, so each K/V block is read
once per kv head. Bytes moved per call ~ sum_s context_len_s * H_kv * D * 2 (K and V) * itemsize: the kernel is
bandwidth-bound; softmax is online (running max and sum) in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SUPPORTED_HEAD_DIMS = (64, 80, 96, 128, 256)


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, out_ptr,
    scale,
    stride_qs, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_bs,
    stride_os, stride_oh,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):  # fmt: skip
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    context_len = tl.load(context_lens_ptr + seq)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    t = tl.arange(0, BLOCK_SIZE)
    g_ok = g < GROUP
    d_ok = d < HEAD_DIM
    heads = kv_head * GROUP + g
    q = tl.load(q_ptr + seq * stride_qs + heads[:, None] * stride_qh + d[None, :],
                mask=g_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32) * scale  # fmt: skip

    m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    denom = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    num_blocks = tl.cdiv(context_len, BLOCK_SIZE)
    for b in range(0, num_blocks):
        block = tl.load(block_tables_ptr + seq * stride_bs + b).to(tl.int64)
        pos_ok = (b * BLOCK_SIZE + t) < context_len
        kv_offsets = block * stride_kb + t[:, None] * stride_kt + kv_head * stride_kh + d[None, :]
        kv_mask = pos_ok[:, None] & d_ok[None, :]
        k = tl.load(k_cache_ptr + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
        v = tl.load(v_cache_ptr + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
        scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2)  # [BLOCK_G, BLOCK_SIZE]
        scores = tl.where(pos_ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        m = m_new
    out = acc / tl.maximum(denom, 1e-30)[:, None]  # context length 0: denom = 0, acc = 0 -> zeros
    tl.store(out_ptr + seq * stride_os + heads[:, None] * stride_oh + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=g_ok[:, None] & d_ok[None, :])  # fmt: skip


def paged_attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of each sequence's newest token over its cached context (its own K/V already stored).

    q: [S, H_q, D]; k_cache, v_cache: [num_blocks, block_size, H_kv, D] (q's dtype, unit stride along D);
    block_tables: [S, M] int32; context_lens: [S] int32 (0 gives a zero row, for padded graph slots); H_q % H_kv == 0;
    D in SUPPORTED_HEAD_DIMS; block_size a power of two. out: optional [S, H_q, D] buffer (no allocation, for CUDA
    graphs). Returns [S, H_q, D] in q's dtype; equals r1fast.reference.paged_attention with one query per sequence.
    Raises ValueError on a shape, dtype, device or head-dim mismatch.
    """
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"q must be [S, H_q, D] and caches [blocks, block_size, H_kv, D], got {tuple(q.shape)}, "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")  # fmt: skip
    s, h_q, d = q.shape
    _, block_size, h_kv, d_cache = k_cache.shape
    if d != d_cache or d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head dim {d} (cache {d_cache}) must match and be one of {SUPPORTED_HEAD_DIMS}")
    if h_q % h_kv != 0:
        raise ValueError(f"H_q={h_q} must be a multiple of H_kv={h_kv}")
    if block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"caches must have q's dtype {q.dtype}, got {k_cache.dtype}, {v_cache.dtype}")
    if block_tables.shape[0] != s or tuple(context_lens.shape) != (s,):
        raise ValueError(f"block_tables [S={s}, M] and context_lens [S={s}] expected, got "
                         f"{tuple(block_tables.shape)}, {tuple(context_lens.shape)}")  # fmt: skip
    if any(x.device != q.device for x in (k_cache, v_cache, block_tables, context_lens)):
        raise ValueError("q, the caches, block_tables and context_lens must be on one device")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride() != k_cache.stride():
        raise ValueError("q and the caches need unit stride along D, and the caches the same strides")
    if out is None:
        out = torch.empty_like(q)
    group = h_q // h_kv
    _paged_decode_kernel[(s, h_kv)](
        q, k_cache, v_cache, block_tables, context_lens, out, scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1),
        GROUP=group, BLOCK_G=max(triton.next_power_of_2(group), 1), HEAD_DIM=d, BLOCK_D=triton.next_power_of_2(d),
        BLOCK_SIZE=block_size,
    )  # fmt: skip
    return out


def paged_attention_prefill(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Causal attention of each sequence's newest queries over its cached context (their K/V already stored).

    q: [N_q, H_q, D], sequence s owns rows query_start_loc[s]:query_start_loc[s + 1], its last context positions;
    block_tables: [S, M] int32; context_lens: [S] int32; query_start_loc: [S + 1] int32; caches as in
    paged_attention_decode. Returns [N_q, H_q, D]; equals r1fast.reference.paged_attention.
    Each query runs as a decode query whose context ends at its own position, so K/V are read once per query token
    (fine for short prompts and recomputes; a tiled prefill kernel that reads each block once per query tile is the
    next step for long prompts).
    """
    if tuple(query_start_loc.shape) != (block_tables.shape[0] + 1,):
        raise ValueError(f"query_start_loc must be [S + 1 = {block_tables.shape[0] + 1}], got "
                         f"{tuple(query_start_loc.shape)}")  # fmt: skip
    starts = query_start_loc.long()
    q_lens = starts[1:] - starts[:-1]
    seq_of_query = torch.repeat_interleave(torch.arange(len(q_lens), device=q.device), q_lens, output_size=q.shape[0])
    offset_in_seq = torch.arange(q.shape[0], device=q.device) - starts[seq_of_query]
    # Query j of sequence s sits at position context_len - q_len + j: it sees that many tokens plus itself.
    query_context = context_lens.long()[seq_of_query] - q_lens[seq_of_query] + offset_in_seq + 1
    return paged_attention_decode(
        q, k_cache, v_cache, block_tables[seq_of_query], query_context.to(torch.int32), scale
    )
