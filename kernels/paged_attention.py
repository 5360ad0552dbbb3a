"""Paged attention over the sampler's KV cache: decode (one query per sequence, optional split-K) and causal prefill.

Layout: k_cache, v_cache [num_blocks, block_size, H_kv, D]; token position p of sequence s lives in page
block_tables[s, p // block_size] at row p % block_size. Keys are visited in tiles of TILE_N positions that may span
pages (each position looks its page up), so any block_size works and tl.dot always sees >= 16 keys.

One kernel does both jobs. A program owns one kv head and a tile of BLOCK_Q queries of one sequence together with
all H_q / H_kv query heads that share that kv head (GQA): its BLOCK_Q * BLOCK_G query rows multiply every K/V tile
they need, so K/V are read from memory once per (query tile, kv head), not once per query head. Online softmax in
float32 (base 2: scores are pre-multiplied by scale * log2(e)).

Decode (BLOCK_Q = 1) is bandwidth-bound: bytes ~ sum_s context_len_s * H_kv * D * 2 (K and V) * itemsize, FLOPs
4 * sum_s context_len_s * H_q * D (~1 FLOP/byte in bf16 with GQA 7: far below any GPU's ridge point). With fewer
(sequence, kv head) programs than SMs and long contexts, each program's keys are split NUM_SPLITS ways
(flash-decoding) and a second kernel merges the partial (max, sum, acc) triples.
Prefill (BLOCK_Q > 1) reads K/V once per query tile, up to the tile's last (causal) position.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from r1fast import reference

SUPPORTED_HEAD_DIMS = (64, 80, 96, 128, 256)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LOG2E = 1.4426950408889634

# Tile sizes and warps, in one place. TILE_N: keys per iteration (>= 16 for tl.dot); the gathered K/V addresses are
# one 64-bit pointer per element, so registers grow with it: compiled for sm_90 with ptxas (no GPU needed), 16 keys
# take 80-180 registers and spill nothing in every decode / prefill configuration of the tests, 32 keys take up to 255
# and 64 spill. MIN_QUERY_ROWS: tl.dot needs >= 16 rows, so decode pads its H_q / H_kv heads up to 16.
# PREFILL_ROWS: target query rows (BLOCK_Q * BLOCK_G) of a prefill program; 8 warps once rows * BLOCK_D > WARP4_ELEMS.
# Decode splits: only when S * H_kv programs leave SMs idle, each split keeping >= MIN_SPLIT_TOKENS keys of capacity.
TILE_N = 16
WARP4_ELEMS = 4096
MIN_QUERY_ROWS = 16
PREFILL_ROWS = 64
MAX_SPLITS = 16
MIN_SPLIT_TOKENS = 256


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b accumulated in float32. UPCAST: the Triton 3.9 interpreter multiplies bfloat16 operands wrongly, so
    under TRITON_INTERPRET bfloat16 operands are widened exactly to float32 first (same products, same sum)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _paged_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, query_start_loc_ptr,
    tile_seq_ptr, tile_first_ptr,
    out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr,
    scale_log2, num_q_heads,
    stride_qn, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_bs, stride_bm,
    stride_on, stride_oh,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_Q: tl.constexpr, TILE: tl.constexpr, NUM_SPLITS: tl.constexpr,
    DECODE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    if DECODE:  # program pid = sequence pid, whose single query is row pid and its last context position
        seq = pid
        q_first = 0
        q_start = pid
        q_len = 1
    else:  # the host mapped each program to (sequence, first query offset); surplus programs exit here
        seq = tl.load(tile_seq_ptr + pid)
        q_first = tl.load(tile_first_ptr + pid)
        q_start = tl.load(query_start_loc_ptr + seq)
        q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
        if q_first >= q_len:
            return
    context_len = tl.load(context_lens_ptr + seq)

    rows = tl.arange(0, BLOCK_Q * BLOCK_G)
    qi = q_first + rows // BLOCK_G  # query offset within the sequence
    g = rows % BLOCK_G
    row_ok = (qi < q_len) & (g < GROUP)
    q_pos = context_len - q_len + qi  # absolute position of each row's query
    heads = kv_head * GROUP + g
    tokens = (q_start + qi).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(q_ptr + tokens[:, None] * stride_qn + heads[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip

    # Keys this tile can see: up to its last query's position (causal); this split's share of their tiles.
    if DECODE:
        kv_end = context_len
    else:
        kv_end = tl.minimum(context_len, context_len - q_len + tl.minimum(q_first + BLOCK_Q, q_len))
    num_tiles = tl.cdiv(kv_end, TILE)
    per_split = tl.cdiv(num_tiles, NUM_SPLITS)
    tile_lo = split * per_split
    tile_hi = tl.minimum(tile_lo + per_split, num_tiles)

    m = tl.full((BLOCK_Q * BLOCK_G,), float("-inf"), tl.float32)
    denom = tl.zeros((BLOCK_Q * BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_Q * BLOCK_G, BLOCK_D), tl.float32)
    n = tl.arange(0, TILE)
    for tile in range(tile_lo, tile_hi):
        kv_pos = tile * TILE + n
        kv_ok = kv_pos < kv_end
        page = tl.load(block_tables_ptr + seq * stride_bs + (kv_pos // BLOCK_SIZE) * stride_bm, mask=kv_ok, other=0)
        offsets = page.to(tl.int64) * stride_kb + (kv_pos % BLOCK_SIZE) * stride_kt + kv_head * stride_kh
        k = tl.load(k_cache_ptr + offsets[None, :] + d[:, None], mask=kv_ok[None, :] & d_ok[:, None], other=0.0)
        v = tl.load(v_cache_ptr + offsets[:, None] + d[None, :], mask=kv_ok[:, None] & d_ok[None, :], other=0.0)
        scores = _dot(q, k, PRECISION, UPCAST) * scale_log2  # [rows, TILE] float32
        visible = kv_ok[None, :] & (kv_pos[None, :] <= q_pos[:, None])
        scores = tl.where(visible, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet: exp2 -> 0, not NaN
        alpha = tl.exp2(m - m_ref)
        p = tl.exp2(scores - m_ref[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST)
        m = m_new

    if NUM_SPLITS == 1:
        out = acc / tl.maximum(denom, 1e-30)[:, None]  # nothing visible (context length 0): acc = 0 -> zeros
        tl.store(out_ptr + tokens[:, None] * stride_on + heads[:, None] * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])  # fmt: skip
    else:
        part = (tokens * num_q_heads + heads) * NUM_SPLITS + split
        tl.store(part_m_ptr + part, m, mask=row_ok)
        tl.store(part_l_ptr + part, denom, mask=row_ok)
        tl.store(part_acc_ptr + part[:, None] * HEAD_DIM + d[None, :], acc, mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _merge_splits_kernel(
    part_acc_ptr, part_m_ptr, part_l_ptr, out_ptr,
    num_q_heads, stride_on, stride_oh,
    NUM_SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    part = (token * num_q_heads + head) * NUM_SPLITS + tl.arange(0, NUM_SPLITS)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    m = tl.load(part_m_ptr + part)
    denom = tl.load(part_l_ptr + part)
    acc = tl.load(part_acc_ptr + part[:, None] * HEAD_DIM + d[None, :], mask=d_ok[None, :], other=0.0)
    m_max = tl.max(m, axis=0)
    weight = tl.exp2(m - tl.where(m_max == float("-inf"), 0.0, m_max))  # an empty split (m = -inf) weighs 0
    out = tl.sum(weight[:, None] * acc, axis=0) / tl.maximum(tl.sum(weight * denom, axis=0), 1e-30)
    tl.store(out_ptr + token * stride_on + head * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d_ok)


# ----------------------------------------------------------------------------------------------------------------
# Public functions: validation, dispatch (CUDA or the interpreter -> Triton; other CPU tensors -> the reference)
# ----------------------------------------------------------------------------------------------------------------


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _use_triton(x: torch.Tensor) -> bool:
    return x.is_cuda or _interpreting()


def _check(q, k_cache, v_cache, block_tables, context_lens, out) -> None:
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"q must be [N, H_q, D] and the caches [num_blocks, block_size, H_kv, D] alike, got "
                         f"{tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")  # fmt: skip
    _, h_q, d = q.shape
    _, _, h_kv, d_cache = k_cache.shape
    if d != d_cache or d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head dim {d} (cache: {d_cache}) must match and be one of {SUPPORTED_HEAD_DIMS}")
    if h_kv == 0 or h_q % h_kv != 0:
        raise ValueError(f"H_q={h_q} must be a multiple of H_kv={h_kv}")
    if q.dtype not in SUPPORTED_DTYPES or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q and the caches must share one dtype of {SUPPORTED_DTYPES}, got {q.dtype}, "
                         f"{k_cache.dtype}, {v_cache.dtype}")  # fmt: skip
    s = block_tables.shape[0] if block_tables.dim() == 2 else -1
    if block_tables.dim() != 2 or tuple(context_lens.shape) != (s,):
        raise ValueError(f"block_tables must be [S, M] and context_lens [S], got {tuple(block_tables.shape)}, "
                         f"{tuple(context_lens.shape)}")  # fmt: skip
    for name, x in (("block_tables", block_tables), ("context_lens", context_lens)):
        if x.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be int32 (or int64), got {x.dtype}")
    if any(x.device != q.device for x in (k_cache, v_cache, block_tables, context_lens)):
        raise ValueError("q, the caches, block_tables and context_lens must be on one device")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride() != k_cache.stride():
        raise ValueError("q and the caches need unit stride along D, and the two caches the same strides")
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or out.device != q.device
                            or out.stride(-1) != 1):  # fmt: skip
        raise ValueError(f"out must be like q {tuple(q.shape)} {q.dtype} with unit stride along D, got "
                         f"{tuple(out.shape)} {out.dtype}")  # fmt: skip


def _default_num_splits(programs: int, max_context: int, device: torch.device) -> int:
    """Splits per (sequence, kv head) for decode, from shapes only (so a captured CUDA graph keeps its choice)."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    splits = 1
    while splits < MAX_SPLITS and programs * splits < 2 * sms and max_context >= 2 * splits * MIN_SPLIT_TOKENS:
        splits *= 2
    return splits


def kernel_config(dtype: torch.dtype, h_q: int, h_kv: int, d: int, block_size: int, block_q: int, num_splits: int,
                  decode: bool) -> dict:  # fmt: skip
    """The constexprs and num_warps of one _paged_attention_kernel launch (also used to compile it in the tests)."""
    group = h_q // h_kv
    block_g = max(triton.next_power_of_2(group), MIN_QUERY_ROWS // block_q)  # tl.dot needs >= 16 rows
    block_d = triton.next_power_of_2(d)
    return dict(
        GROUP=group, BLOCK_G=block_g, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_SIZE=block_size, BLOCK_Q=block_q,
        TILE=TILE_N, NUM_SPLITS=num_splits, DECODE=decode, PRECISION="ieee" if dtype == torch.float32 else "tf32",
        UPCAST=dtype == torch.bfloat16 and _interpreting(),
        num_warps=4 if block_q * block_g * block_d <= WARP4_ELEMS else 8,
    )  # fmt: skip


def _launch(q, k_cache, v_cache, block_tables, context_lens, query_start_loc, tile_seq, tile_first, out, scale,
            grid0: int, block_q: int, num_splits: int, decode: bool) -> None:  # fmt: skip
    h_q, d = q.shape[1], q.shape[2]
    h_kv, block_size = k_cache.shape[2], k_cache.shape[1]
    config = kernel_config(q.dtype, h_q, h_kv, d, block_size, block_q, num_splits, decode)
    if num_splits > 1:
        part_m = torch.empty(q.shape[0], h_q, num_splits, device=q.device, dtype=torch.float32)
        part_l = torch.empty_like(part_m)
        part_acc = torch.empty(q.shape[0], h_q, num_splits, d, device=q.device, dtype=torch.float32)
    else:
        part_m = part_l = part_acc = out  # unused
    dummy = context_lens  # stands in for the pointers decode does not read
    _paged_attention_kernel[(grid0, h_kv, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens,
        dummy if query_start_loc is None else query_start_loc,
        dummy if tile_seq is None else tile_seq, dummy if tile_first is None else tile_first,
        out, part_acc, part_m, part_l,
        scale * LOG2E, h_q,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), block_tables.stride(1), out.stride(0), out.stride(1),
        **config,
    )  # fmt: skip
    if num_splits > 1:
        _merge_splits_kernel[(q.shape[0], h_q)](
            part_acc, part_m, part_l, out, h_q, out.stride(0), out.stride(1),
            NUM_SPLITS=num_splits, HEAD_DIM=d, BLOCK_D=config["BLOCK_D"],
        )  # fmt: skip


def paged_attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Attention of each sequence's newest token over its cached context (that token's K/V already stored).

    q: [S, H_q, D], row s the query at position context_lens[s] - 1 of sequence s. k_cache, v_cache:
    [num_blocks, block_size, H_kv, D] in q's dtype (float16, bfloat16 or float32), unit stride along D, any
    block_size. block_tables: [S, M] int32 page ids (entries past a sequence's pages are never read);
    context_lens: [S] int32, each <= M * block_size. H_q % H_kv == 0; D in SUPPORTED_HEAD_DIMS.
    A context length of 0 gives a zero row (the padded rows of a CUDA-graph batch).
    out: optional [S, H_q, D] buffer in q's dtype, written and returned. num_splits: a power of two splitting each
    sequence's keys (flash-decoding); default from shapes: > 1 only on CUDA when S * H_kv programs leave SMs idle.
    CUDA-graph capturable: no host sync, and every allocation (the float32 split partials, when num_splits > 1)
    depends on shapes only. CUDA tensors (or TRITON_INTERPRET=1) run the Triton kernel, other CPU tensors
    r1fast.reference.paged_attention, which this equals with query_start_loc = arange(S + 1).
    Returns [S, H_q, D] in q's dtype. Raises ValueError on a shape, dtype, device, stride or head-dim mismatch.
    """
    _check(q, k_cache, v_cache, block_tables, context_lens, out)
    s = q.shape[0]
    if block_tables.shape[0] != s:
        raise ValueError(f"decode takes one query per sequence: q has {s} rows, block_tables {block_tables.shape[0]}")
    if num_splits is None:
        num_splits = _default_num_splits(s * k_cache.shape[2], block_tables.shape[1] * k_cache.shape[1], q.device)
    if not (isinstance(num_splits, int) and 1 <= num_splits <= 64 and num_splits & (num_splits - 1) == 0):
        raise ValueError(f"num_splits must be a power of two in [1, 64], got {num_splits!r}")
    if out is None:
        out = torch.empty_like(q)
    if s == 0:
        return out
    if not _use_triton(q):
        starts = torch.arange(s + 1, dtype=torch.int32)
        return out.copy_(reference.paged_attention(q, k_cache, v_cache, block_tables, context_lens, starts, scale))
    _launch(q, k_cache, v_cache, block_tables, context_lens, None, None, None, out, scale,
            grid0=s, block_q=1, num_splits=num_splits, decode=True)  # fmt: skip
    return out


def prefill_block_q(group: int, head_dim: int) -> int:
    """Queries per prefill program: BLOCK_Q * next_pow2(group) rows ~ PREFILL_ROWS (halved for head dim 256)."""
    rows = PREFILL_ROWS // 2 if head_dim > 128 else PREFILL_ROWS
    return max(1, rows // triton.next_power_of_2(group), MIN_QUERY_ROWS // triton.next_power_of_2(group))


def paged_attention_prefill(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of each sequence's newest queries over its cached context (their K/V already stored).

    q: [N_q, H_q, D]; sequence s owns rows query_start_loc[s]:query_start_loc[s + 1] (query_start_loc: [S + 1]
    int32, query_start_loc[0] = 0, non-decreasing, last = N_q), and those rows are its last positions
    context_lens[s] - q_len_s .. context_lens[s] - 1 (so q_len_s <= context_lens[s]; a prompt, a prompt tail after a
    prefix-cache hit, a recompute after preemption, or a decode token). Caches, block_tables, context_lens and D as
    in paged_attention_decode; a sequence with no queries reads nothing. out: optional [N_q, H_q, D] buffer.
    Returns [N_q, H_q, D] in q's dtype; equals r1fast.reference.paged_attention. No host sync.
    Raises ValueError on a shape, dtype, device, stride or head-dim mismatch.
    """
    _check(q, k_cache, v_cache, block_tables, context_lens, out)
    s = block_tables.shape[0]
    if tuple(query_start_loc.shape) != (s + 1,) or query_start_loc.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"query_start_loc must be [S + 1 = {s + 1}] int32, got {tuple(query_start_loc.shape)} "
                         f"{query_start_loc.dtype}")  # fmt: skip
    if query_start_loc.device != q.device:
        raise ValueError("query_start_loc must be on q's device")
    if out is None:
        out = torch.empty_like(q)
    if q.shape[0] == 0 or s == 0:
        return out
    if not _use_triton(q):
        return out.copy_(reference.paged_attention(q, k_cache, v_cache, block_tables, context_lens,
                                                   query_start_loc, scale))  # fmt: skip
    group = q.shape[1] // k_cache.shape[2]
    block_q = prefill_block_q(group, q.shape[2])
    # Sequence s gets programs tile_start[s] .. tile_start[s + 1] - 1 with tile_start[s] = query_start_loc[s] // BLOCK_Q
    # + s: at least ceil(q_len_s / BLOCK_Q) of them, and N_q // BLOCK_Q + S in all, so the grid size depends on shapes
    # only. Programs left over (past a sequence's queries) exit at once.
    starts = query_start_loc.long()
    tile_start = starts[:-1] // block_q + torch.arange(s, device=q.device)
    grid0 = triton.cdiv(q.shape[0], block_q) + s
    pids = torch.arange(grid0, device=q.device)
    tile_seq = (torch.searchsorted(tile_start, pids, right=True) - 1).clamp_(min=0)
    tile_first = ((pids - tile_start[tile_seq]) * block_q).to(torch.int32)
    _launch(q, k_cache, v_cache, block_tables, context_lens, query_start_loc, tile_seq.to(torch.int32), tile_first,
            out, scale, grid0=grid0, block_q=block_q, num_splits=1, decode=False)  # fmt: skip
    return out
