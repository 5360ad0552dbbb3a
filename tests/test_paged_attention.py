"""The Triton paged-attention decode kernel against r1fast.reference.paged_attention (interpreter on CPU)."""

from __future__ import annotations

import pytest
import torch

from r1fast import reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_paged(context_lens: list[int], h_q: int, h_kv: int, d: int, block_size: int, dtype, device=DEVICE):
    """Random caches with shuffled, non-contiguous block tables; one query per sequence."""
    s = len(context_lens)
    per_seq = [max(1, -(-n // block_size)) for n in context_lens]
    num_blocks = sum(per_seq) + 3
    ids = torch.randperm(num_blocks)
    tables = torch.zeros(s, max(per_seq), dtype=torch.int32)
    start = 0
    for i, n in enumerate(per_seq):
        tables[i, :n] = ids[start : start + n]
        start += n
    k = torch.randn(num_blocks, block_size, h_kv, d, dtype=dtype, device=device)
    v = torch.randn_like(k)
    q = torch.randn(s, h_q, d, dtype=dtype, device=device)
    lens = torch.tensor(context_lens, dtype=torch.int32)
    return q, k, v, tables.to(device), lens.to(device)


@pytest.mark.parametrize("d", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("h_q,h_kv", [(2, 2), (4, 2), (4, 1)])
def test_decode_matches_reference(d, h_q, h_kv, seed):
    from r1fast.kernels.paged_attention import paged_attention_decode

    block_size = 4
    lens = [1, 8, 11]  # a single token, an exact multiple of the block size, a ragged tail
    q, k, v, tables, context_lens = random_paged(lens, h_q, h_kv, d, block_size, torch.float32)
    out = paged_attention_decode(q, k, v, tables, context_lens, d**-0.5)
    starts = torch.arange(len(lens) + 1, dtype=torch.int32, device=q.device)
    want = reference.paged_attention(q.double(), k.double(), v.double(), tables, context_lens, starts, d**-0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


def test_zero_context_gives_zeros_and_out_buffer_is_used(seed):
    from r1fast.kernels.paged_attention import paged_attention_decode

    q, k, v, tables, lens = random_paged([0, 5], 4, 2, 64, 4, torch.float32)
    out = torch.full_like(q, float("nan"))
    result = paged_attention_decode(q, k, v, tables, lens, 0.125, out=out)
    assert result.data_ptr() == out.data_ptr()
    assert result[0].eq(0).all() and torch.isfinite(result[1]).all()


def test_decode_rejects_bad_input():
    from r1fast.kernels.paged_attention import paged_attention_decode

    q, k, v, tables, lens = random_paged([3], 4, 2, 64, 4, torch.float32)
    with pytest.raises(ValueError, match="head dim"):
        paged_attention_decode(q[..., :32], k[..., :32], v[..., :32], tables, lens, 1.0)
    with pytest.raises(ValueError, match="multiple"):
        paged_attention_decode(q[:, :3], k, v, tables, lens, 1.0)
    with pytest.raises(ValueError, match="dtype"):
        paged_attention_decode(q, k.double(), v.double(), tables, lens, 1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decode_matches_reference_at_real_sizes(dtype, seed):
    from r1fast.kernels.paged_attention import paged_attention_decode

    lens = torch.randint(1, 2048, (64,)).tolist()
    q, k, v, tables, context_lens = random_paged(lens, 14, 2, 64, 16, dtype)
    out = paged_attention_decode(q, k, v, tables, context_lens, 0.125)
    starts = torch.arange(len(lens) + 1, dtype=torch.int32, device=q.device)
    want = reference.paged_attention(q.float(), k.float(), v.float(), tables, context_lens, starts, 0.125)
    assert torch.isfinite(out).all()
    assert ((out.float() - want).norm() / want.norm()).item() < 1e-2


@pytest.mark.parametrize("d,h_q,h_kv", [(64, 4, 2), (80, 2, 1), (128, 4, 4)])
def test_prefill_matches_reference(d, h_q, h_kv, seed):
    from r1fast.kernels.paged_attention import paged_attention_prefill

    lens, q_lens = [5, 8, 9], [5, 1, 3]  # a whole prompt, a decode token, a recompute tail after a cached prefix
    _, k, v, tables, context_lens = random_paged(lens, h_q, h_kv, d, 4, torch.float32)
    q = torch.randn(sum(q_lens), h_q, d, device=k.device)
    starts = torch.tensor([0, 5, 6, 9], dtype=torch.int32, device=k.device)
    out = paged_attention_prefill(q, k, v, tables, context_lens, starts, d**-0.5)
    want = reference.paged_attention(q.double(), k.double(), v.double(), tables, context_lens, starts, d**-0.5)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
