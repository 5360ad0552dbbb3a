"""Write the K/V of new tokens into the paged cache: token i goes to slot slot_mapping[i].

Slot = page * block_size + row, i.e. cache[slot // block_size, slot % block_size]. One program per token copies
its H_kv * D keys and values: bytes ~ 2 * N * H_kv * D * (input + cache itemsize), a pure copy.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _store_kv_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, num_slots,
    stride_kn, stride_kh, stride_vn, stride_vh,
    stride_cb, stride_ct, stride_ch,
    NUM_KV_HEADS: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if (slot < 0) | (slot >= num_slots):  # -1 marks a padding row; out of range is never written either
        return
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    mask = (h < NUM_KV_HEADS)[:, None] & (d < HEAD_DIM)[None, :]
    k = tl.load(k_ptr + token * stride_kn + h[:, None] * stride_kh + d[None, :], mask=mask)
    v = tl.load(v_ptr + token * stride_vn + h[:, None] * stride_vh + d[None, :], mask=mask)
    dst = (slot // BLOCK_SIZE) * stride_cb + (slot % BLOCK_SIZE) * stride_ct + h[:, None] * stride_ch + d[None, :]
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def _use_triton(x: torch.Tensor) -> bool:
    return x.is_cuda or os.environ.get("TRITON_INTERPRET", "0") == "1"


def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write k[i], v[i] into the caches at slot slot_mapping[i], in place; slot -1 skips row i.

    k, v: [N, H_kv, D] float16/bfloat16/float32, unit stride along D (cast to the cache dtype on store).
    k_cache, v_cache: [num_blocks, block_size, H_kv, D], same shape, dtype and strides, unit stride along D.
    slot_mapping: [N] int64 (or int32); slot = page * block_size + row. Slots must be distinct (two rows writing one
    slot race) and < num_blocks * block_size (larger ones are skipped like -1, never written out of bounds).
    CUDA-graph capturable (no host sync, no allocation). CUDA tensors (or TRITON_INTERPRET=1) run the Triton kernel,
    other CPU tensors an indexed copy. Raises ValueError on a shape, dtype, device or stride mismatch.
    """
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"k and v must both be [N, H_kv, D], got {tuple(k.shape)}, {tuple(v.shape)}")
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"caches must both be [num_blocks, block_size, H_kv, D], got {tuple(k_cache.shape)}, "
                         f"{tuple(v_cache.shape)}")  # fmt: skip
    n, h_kv, d = k.shape
    if tuple(k_cache.shape[2:]) != (h_kv, d):
        raise ValueError(f"k/v heads and head dim {(h_kv, d)} differ from the cache's {tuple(k_cache.shape[2:])}")
    if tuple(slot_mapping.shape) != (n,) or slot_mapping.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"slot_mapping must be [N={n}] int64, got {tuple(slot_mapping.shape)} {slot_mapping.dtype}")
    if k.dtype not in SUPPORTED_DTYPES or v.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"k, v dtype must be one of {SUPPORTED_DTYPES}, got {k.dtype}, {v.dtype}")
    if k_cache.dtype not in SUPPORTED_DTYPES or v_cache.dtype != k_cache.dtype:
        raise ValueError(f"caches must share one dtype of {SUPPORTED_DTYPES}, got {k_cache.dtype}, {v_cache.dtype}")
    if any(x.device != k.device for x in (v, k_cache, v_cache, slot_mapping)):
        raise ValueError("k, v, the caches and slot_mapping must be on one device")
    if k.stride(-1) != 1 or v.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride() != k_cache.stride():
        raise ValueError("k, v and the caches need unit stride along D, and the two caches the same strides")
    if n == 0:
        return
    num_blocks, block_size = k_cache.shape[:2]
    if not _use_triton(k):
        slots = slot_mapping.long()
        keep = (slots >= 0) & (slots < num_blocks * block_size)
        slots = slots[keep]
        k_cache[slots // block_size, slots % block_size] = k[keep].to(k_cache.dtype)
        v_cache[slots // block_size, slots % block_size] = v[keep].to(v_cache.dtype)
        return
    _store_kv_kernel[(n,)](
        k, v, k_cache, v_cache, slot_mapping, num_blocks * block_size,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        NUM_KV_HEADS=h_kv, BLOCK_H=triton.next_power_of_2(h_kv), HEAD_DIM=d, BLOCK_D=triton.next_power_of_2(d),
        BLOCK_SIZE=block_size, num_warps=4 if h_kv * d <= 2048 else 8,
    )  # fmt: skip
