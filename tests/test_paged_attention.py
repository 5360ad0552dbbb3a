"""The paged-attention kernels (decode, split-K decode, prefill) and store_kv against r1fast.reference.

On CPU the Triton kernels run in the interpreter (tests/conftest.py sets TRITON_INTERPRET=1) on tiny shapes; the
`gpu` tests run them at real sizes, in CUDA graphs, and end to end against HF generate.
"""

from __future__ import annotations

import pytest
import torch
from r1fast.kernels.kv_store import store_kv
from r1fast.kernels.paged_attention import SUPPORTED_HEAD_DIMS, paged_attention_decode, paged_attention_prefill

from r1fast import reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}  # abs = rel, vs the reference in float64
GQA = [(2, 2), (4, 2), (8, 2), (7, 1)]  # H_q / H_kv = 1, 2, 4, 7 (Qwen2.5-0.5B's ratio, not a power of two)


def random_paged(context_lens: list[int], h_q: int, h_kv: int, d: int, block_size: int, dtype=torch.float32,
                 device: str = DEVICE, num_queries: int | None = None):  # fmt: skip
    """Caches whose every unused row is NaN (so a read past a context shows), shuffled non-contiguous pages, and
    block-table entries past a sequence's pages pointing far outside the pool (so reading one would fault)."""
    s = len(context_lens)
    pages = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(pages) + 3
    ids = torch.randperm(num_blocks)
    width = max(max(pages), 1) + 1
    tables = torch.full((s, width), 1_000_000_000, dtype=torch.int32)
    k = torch.full((num_blocks, block_size, h_kv, d), float("nan"), dtype=dtype)
    v = k.clone()
    start = 0
    for i, (n, p) in enumerate(zip(context_lens, pages, strict=True)):
        tables[i, :p] = ids[start : start + p]
        start += p
        pos = torch.arange(n)
        blocks, offs = tables[i].long()[pos // block_size], pos % block_size
        k[blocks, offs] = torch.randn(n, h_kv, d).to(dtype)
        v[blocks, offs] = torch.randn(n, h_kv, d).to(dtype)
    q = torch.randn(s if num_queries is None else num_queries, h_q, d).to(dtype)
    lens = torch.tensor(context_lens, dtype=torch.int32)
    return q.to(device), k.to(device), v.to(device), tables.to(device), lens.to(device)


def reference_attention(q, k, v, tables, lens, starts, scale):
    """The reference in float64 (float32 on CUDA at real sizes is plenty) on the same (rounded) inputs."""
    wide = torch.float64 if q.device.type == "cpu" else torch.float32
    return reference.paged_attention(q.to(wide), k.to(wide), v.to(wide), tables, lens, starts, scale)


def assert_matches(out, want, dtype):
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.to(want.dtype), want, rtol=TOL[dtype], atol=TOL[dtype])


def ragged_lens(block_size: int, extra: int) -> list[int]:
    """One token, an exact multiple of the block size, a random ragged length."""
    return [1, block_size * int(torch.randint(1, 4, ())), int(torch.randint(2, extra, ()))]


# ---------------------------------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", SUPPORTED_HEAD_DIMS)
@pytest.mark.parametrize("h_q,h_kv", GQA)
@pytest.mark.parametrize("num_splits", [1, 4])
def test_decode_matches_reference(d, h_q, h_kv, num_splits, seed):
    lens = ragged_lens(4, 70)
    q, k, v, tables, context_lens = random_paged(lens, h_q, h_kv, d, 4)
    out = paged_attention_decode(q, k, v, tables, context_lens, d**-0.5, num_splits=num_splits)
    starts = torch.arange(len(lens) + 1, dtype=torch.int32, device=q.device)
    assert_matches(out, reference_attention(q, k, v, tables, context_lens, starts, d**-0.5), torch.float32)


@pytest.mark.parametrize("block_size", [1, 5, 16, 64])  # any page size, powers of two or not, smaller than a tile
def test_decode_any_block_size(block_size, seed):
    lens = [1, block_size, 2 * block_size + 1, 45]
    q, k, v, tables, context_lens = random_paged(lens, 4, 2, 64, block_size)
    out = paged_attention_decode(q, k, v, tables, context_lens, 0.125, num_splits=2)
    starts = torch.arange(len(lens) + 1, dtype=torch.int32, device=q.device)
    assert_matches(out, reference_attention(q, k, v, tables, context_lens, starts, 0.125), torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d,h_q,h_kv", [(64, 14, 2), (128, 12, 2)])  # Qwen2.5-0.5B and -1.5B heads
def test_decode_half_precision(dtype, d, h_q, h_kv, seed):
    lens = ragged_lens(16, 90)
    q, k, v, tables, context_lens = random_paged(lens, h_q, h_kv, d, 16, dtype)
    starts = torch.arange(len(lens) + 1, dtype=torch.int32, device=q.device)
    want = reference_attention(q, k, v, tables, context_lens, starts, d**-0.5)
    for splits in (1, 2):
        assert_matches(paged_attention_decode(q, k, v, tables, context_lens, d**-0.5, num_splits=splits), want, dtype)


def test_decode_zero_context_gives_zeros_and_fills_out(seed):
    q, k, v, tables, lens = random_paged([0, 5, 0, 33], 4, 2, 64, 4)
    for splits in (1, 8):
        out = torch.full_like(q, float("nan"))
        result = paged_attention_decode(q, k, v, tables, lens, 0.125, out=out, num_splits=splits)
        assert result.data_ptr() == out.data_ptr()
        assert out[0].eq(0).all() and out[2].eq(0).all()
        starts = torch.arange(5, dtype=torch.int32, device=q.device)
        assert_matches(out, reference_attention(q, k, v, tables, lens, starts, 0.125), torch.float32)


def test_decode_equals_prefill_with_one_query_each(seed):
    lens = ragged_lens(4, 50)
    q, k, v, tables, context_lens = random_paged(lens, 8, 2, 96, 4)
    starts = torch.arange(len(lens) + 1, dtype=torch.int32, device=q.device)
    decode = paged_attention_decode(q, k, v, tables, context_lens, 0.1)
    prefill = paged_attention_prefill(q, k, v, tables, context_lens, starts, 0.1)
    torch.testing.assert_close(decode, prefill, rtol=1e-6, atol=1e-6)


def test_decode_reads_only_its_rows_of_a_strided_q(seed):
    # q as a view into a fused [S, H_q + 2 H_kv, D] qkv projection: non-contiguous rows.
    lens = [3, 9]
    _, k, v, tables, context_lens = random_paged(lens, 4, 2, 64, 4)
    qkv = torch.randn(2, 8, 64, device=k.device)
    q = qkv[:, :4]
    out = paged_attention_decode(q, k, v, tables, context_lens, 0.125)
    starts = torch.arange(3, dtype=torch.int32, device=k.device)
    assert_matches(out, reference_attention(q, k, v, tables, context_lens, starts, 0.125), torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# Prefill
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", SUPPORTED_HEAD_DIMS)
@pytest.mark.parametrize("h_q,h_kv", GQA)
def test_prefill_matches_reference(d, h_q, h_kv, seed):
    # A whole prompt longer than one query tile, a decode token, a recompute tail after a cached prefix, a
    # sequence with no queries in this step, and a prompt of one token.
    n_long = int(torch.randint(70, 90, ()))
    lens = [n_long, 8, int(torch.randint(10, 30, ())), 6, 1]
    q_lens = [n_long, 1, int(torch.randint(2, 10, ())), 0, 1]
    starts = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    q, k, v, tables, context_lens = random_paged(lens, h_q, h_kv, d, 4, num_queries=sum(q_lens))
    out = paged_attention_prefill(q, k, v, tables, context_lens, starts, d**-0.5)
    assert_matches(out, reference_attention(q, k, v, tables, context_lens, starts, d**-0.5), torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_prefill_half_precision(dtype, seed):
    lens = [40, 17]  # 40 prompt queries, then a 5-query tail after a 12-token prefix
    starts = torch.tensor([0, 40, 45], dtype=torch.int32, device=DEVICE)
    q, k, v, tables, context_lens = random_paged(lens, 14, 2, 64, 16, dtype, num_queries=45)
    out = paged_attention_prefill(q, k, v, tables, context_lens, starts, 0.125)
    assert_matches(out, reference_attention(q, k, v, tables, context_lens, starts, 0.125), dtype)


def test_prefill_fills_out(seed):
    q, k, v, tables, lens = random_paged([6, 3], 4, 4, 128, 4, num_queries=9)
    starts = torch.tensor([0, 6, 9], dtype=torch.int32, device=q.device)
    out = torch.full_like(q, float("nan"))
    result = paged_attention_prefill(q, k, v, tables, lens, starts, 0.09, out=out)
    assert result.data_ptr() == out.data_ptr()
    assert_matches(out, reference_attention(q, k, v, tables, lens, starts, 0.09), torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# Dispatch and validation
# ---------------------------------------------------------------------------------------------------------------


def test_cpu_without_interpreter_runs_the_reference(monkeypatch, seed):
    q, k, v, tables, lens = random_paged([7, 1], 4, 2, 80, 4, device="cpu")
    kernel = paged_attention_decode(q, k, v, tables, lens, 0.1)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    plain = paged_attention_decode(q, k, v, tables, lens, 0.1)
    torch.testing.assert_close(plain, kernel, rtol=1e-5, atol=1e-5)
    starts = torch.tensor([0, 7, 8], dtype=torch.int32)
    qp = torch.randn(8, 4, 80)
    torch.testing.assert_close(paged_attention_prefill(qp, k, v, tables, lens, starts, 0.1),
                               reference.paged_attention(qp, k, v, tables, lens, starts, 0.1))  # fmt: skip


def test_attention_rejects_bad_input():
    q, k, v, tables, lens = random_paged([3, 5], 4, 2, 64, 4, device="cpu")
    starts = torch.tensor([0, 1, 2], dtype=torch.int32)
    d_major_q = q.transpose(1, 2).contiguous().transpose(1, 2)
    cases = [
        ("head dim 32", lambda: paged_attention_decode(q[..., :32], k[..., :32], v[..., :32], tables, lens, 1.0)),
        ("head dim", lambda: paged_attention_decode(q, k[..., :32], v[..., :32], tables, lens, 1.0)),
        ("multiple", lambda: paged_attention_decode(q[:, :3], k, v, tables, lens, 1.0)),
        ("dtype", lambda: paged_attention_decode(q, k.double(), v.double(), tables, lens, 1.0)),
        ("dtype", lambda: paged_attention_decode(q.double(), k.double(), v.double(), tables, lens, 1.0)),
        ("int32", lambda: paged_attention_decode(q, k, v, tables.float(), lens, 1.0)),
        ("context_lens", lambda: paged_attention_decode(q, k, v, tables, lens[:1], 1.0)),
        ("one query per sequence", lambda: paged_attention_decode(q[:1], k, v, tables, lens, 1.0)),
        ("num_splits", lambda: paged_attention_decode(q, k, v, tables, lens, 1.0, num_splits=3)),
        ("caches", lambda: paged_attention_decode(q, k, v[:1], tables, lens, 1.0)),
        ("one device", lambda: paged_attention_decode(q, k, v, tables.to("meta"), lens, 1.0)),
        ("unit stride", lambda: paged_attention_decode(d_major_q, k, v, tables, lens, 1.0)),
        ("out", lambda: paged_attention_decode(q, k, v, tables, lens, 1.0, out=torch.empty(2, 4, 64).half())),
        ("query_start_loc", lambda: paged_attention_prefill(q, k, v, tables, lens, starts[:2], 1.0)),
        ("query_start_loc", lambda: paged_attention_prefill(q, k, v, tables, lens, starts.float(), 1.0)),
    ]
    for match, call in cases:
        with pytest.raises(ValueError, match=match):
            call()


# ---------------------------------------------------------------------------------------------------------------
# store_kv
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [64, 80, 256])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_store_kv_writes_slots_and_skips_padding(d, cache_dtype, seed):
    num_blocks, block_size, h_kv, n = 5, 4, 3, 9
    k_cache = torch.randn(num_blocks, block_size, h_kv, d, device=DEVICE).to(cache_dtype)
    v_cache = torch.randn_like(k_cache)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    slots = torch.randperm(num_blocks * block_size, device=DEVICE)[:n]
    slots[torch.randperm(n)[:2]] = -1  # padding rows of a graph bucket
    k = torch.randn(n, 2 * h_kv, d, device=DEVICE)[:, :h_kv]  # a strided view, as out of a fused projection
    v = torch.randn(n, h_kv, d, device=DEVICE)
    store_kv(k, v, k_cache, v_cache, slots)
    want_k, want_v = before_k.view(-1, h_kv, d), before_v.view(-1, h_kv, d)
    keep = slots >= 0
    want_k[slots[keep]] = k[keep].to(cache_dtype)
    want_v[slots[keep]] = v[keep].to(cache_dtype)
    # Same dtype: an exact copy. float32 -> bfloat16: within one bfloat16 ulp (the GPU rounds to nearest even, the
    # Triton interpreter truncates).
    ulp = 0.0 if cache_dtype == torch.float32 else 2.0**-7
    torch.testing.assert_close(k_cache.view(-1, h_kv, d), want_k, rtol=ulp, atol=0.0)
    torch.testing.assert_close(v_cache.view(-1, h_kv, d), want_v, rtol=ulp, atol=0.0)
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool, device=DEVICE)
    untouched[slots[keep]] = False
    assert torch.equal(k_cache.view(-1, h_kv, d)[untouched], before_k.view(-1, h_kv, d)[untouched])


def test_store_kv_then_decode_matches_reference(seed):
    # The sampler's decode step: store the new token's K/V at its slot, then attend over the whole context.
    block_size, h_q, h_kv, d = 4, 4, 2, 64
    lens = [1, 8, 13]
    q, k_cache, v_cache, tables, context_lens = random_paged([n - 1 for n in lens], h_q, h_kv, d, block_size)
    free = torch.isnan(k_cache.view(k_cache.shape[0], -1)).all(1).nonzero().flatten().tolist()
    positions = [n - 1 for n in lens]
    for i, pos in enumerate(positions):
        if pos % block_size == 0:  # the new token opens a page
            tables[i, pos // block_size] = free.pop()
    slots = torch.tensor([int(tables[i, p // block_size]) * block_size + p % block_size
                          for i, p in enumerate(positions)], device=DEVICE)  # fmt: skip
    new_k, new_v = torch.randn(len(lens), h_kv, d, device=DEVICE), torch.randn(len(lens), h_kv, d, device=DEVICE)
    store_kv(new_k, new_v, k_cache, v_cache, slots)
    context_lens = torch.tensor(lens, dtype=torch.int32, device=DEVICE)
    out = paged_attention_decode(q, k_cache, v_cache, tables, context_lens, d**-0.5)
    starts = torch.arange(len(lens) + 1, dtype=torch.int32, device=DEVICE)
    assert_matches(out, reference_attention(q, k_cache, v_cache, tables, context_lens, starts, d**-0.5), torch.float32)


def test_store_kv_without_interpreter_matches(monkeypatch, seed):
    k_cache = torch.zeros(3, 4, 2, 64)
    v_cache = torch.zeros_like(k_cache)
    k, v = torch.randn(4, 2, 64), torch.randn(4, 2, 64)
    slots = torch.tensor([5, -1, 0, 11])
    store_kv(k, v, k_cache, v_cache, slots)
    k2, v2 = torch.zeros_like(k_cache), torch.zeros_like(v_cache)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    store_kv(k, v, k2, v2, slots)
    assert torch.equal(k_cache, k2) and torch.equal(v_cache, v2)
    assert k2.view(-1, 2, 64)[[1, 2, 3, 4]].eq(0).all()


def test_store_kv_rejects_bad_input():
    k_cache = torch.zeros(3, 4, 2, 64)
    k, slots = torch.randn(4, 2, 64), torch.arange(4)
    d_major = k.transpose(1, 2).contiguous().transpose(1, 2)
    cases = [
        ("k and v", lambda: store_kv(k, k[:3], k_cache, k_cache, slots)),
        ("caches", lambda: store_kv(k, k, k_cache, k_cache[:2], slots)),
        ("heads", lambda: store_kv(k[:, :1], k[:, :1], k_cache, k_cache, slots)),
        ("slot_mapping", lambda: store_kv(k, k, k_cache, k_cache, slots[:3])),
        ("slot_mapping", lambda: store_kv(k, k, k_cache, k_cache, slots.float())),
        ("dtype", lambda: store_kv(k.double(), k.double(), k_cache, k_cache, slots)),
        ("one device", lambda: store_kv(k, k, k_cache, k_cache, slots.to("meta"))),
        ("unit stride", lambda: store_kv(d_major, k, k_cache, k_cache, slots)),
    ]
    for match, call in cases:
        with pytest.raises(ValueError, match=match):
            call()


# ---------------------------------------------------------------------------------------------------------------
# GPU: real sizes, CUDA graphs, end to end
# ---------------------------------------------------------------------------------------------------------------


def relative_error(out: torch.Tensor, want: torch.Tensor) -> float:
    return ((out.float() - want.float()).norm() / want.float().norm()).item()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d,h_q,h_kv,num_seqs", [(64, 14, 2, 256), (128, 12, 2, 64), (80, 8, 8, 16), (256, 8, 1, 4)])
def test_decode_at_real_sizes(dtype, d, h_q, h_kv, num_seqs, seed):
    lens = torch.randint(1, 2048, (num_seqs,))
    lens[0], lens[-1] = 1, 16 * 64
    q, k, v, tables, context_lens = random_paged(lens.tolist(), h_q, h_kv, d, 16, dtype)
    starts = torch.arange(num_seqs + 1, dtype=torch.int32, device=q.device)
    want = reference_attention(q, k, v, tables, context_lens, starts, d**-0.5)
    for splits in (None, 1, 8):
        out = paged_attention_decode(q, k, v, tables, context_lens, d**-0.5, num_splits=splits)
        assert torch.isfinite(out).all()
        assert relative_error(out, want) < 1e-2, splits


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d,h_q,h_kv", [(64, 14, 2), (128, 12, 2), (96, 4, 4), (256, 8, 2)])
def test_prefill_at_real_sizes(dtype, d, h_q, h_kv, seed):
    lens = [512, 700, 1000, 129, 1]
    q_lens = [512, 60, 1000, 1, 1]  # prompts, a recompute tail, a decode token
    starts = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    q, k, v, tables, context_lens = random_paged(lens, h_q, h_kv, d, 16, dtype, num_queries=sum(q_lens))
    out = paged_attention_prefill(q, k, v, tables, context_lens, starts, d**-0.5)
    want = reference_attention(q, k, v, tables, context_lens, starts, d**-0.5)
    assert torch.isfinite(out).all()
    assert relative_error(out, want) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("num_splits", [1, 4])
def test_decode_and_store_kv_replay_in_a_cuda_graph(num_splits, seed):
    num_seqs, h_q, h_kv, d, block_size = 32, 14, 2, 64, 16
    # Pages for 400 tokens each, so every length drawn below has its pages; rows past a length are zeros.
    q, k, v, tables, lens = random_paged([400] * num_seqs, h_q, h_kv, d, block_size, torch.bfloat16)
    k, v = torch.nan_to_num(k), torch.nan_to_num(v)
    new_k = torch.randn(num_seqs, h_kv, d, device="cuda", dtype=torch.bfloat16)
    new_v = torch.randn_like(new_k)
    slots = torch.full((num_seqs,), -1, dtype=torch.int64, device="cuda")
    out = torch.empty_like(q)

    def step():
        store_kv(new_k, new_v, k, v, slots)
        paged_attention_decode(q, k, v, tables, lens, 0.125, out=out, num_splits=num_splits)

    step()  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for _ in range(3):  # new data in the same buffers: new queries, new lengths (some padded to 0), new slots
        q.copy_(torch.randn_like(q))
        new_k.copy_(torch.randn_like(new_k))
        new_lens = torch.randint(0, 400, (num_seqs,), device="cuda", dtype=torch.int32)
        lens.copy_(new_lens)
        last = (new_lens.long() - 1).clamp(min=0)
        page = tables.long().gather(1, (last // block_size)[:, None])[:, 0]
        slots.copy_(torch.where(new_lens > 0, page * block_size + last % block_size, -1))
        graph.replay()
        torch.cuda.synchronize()
        stored = k.view(-1, h_kv, d)[slots[new_lens > 0]]
        assert torch.equal(stored, new_k[new_lens > 0])
        starts = torch.arange(num_seqs + 1, dtype=torch.int32, device="cuda")
        want = reference_attention(q, k, v, tables, lens, starts, 0.125)
        assert out[new_lens == 0].eq(0).all()
        assert relative_error(out, want) < 1e-2


def first_divergence(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)


@pytest.mark.gpu
def test_sampler_greedy_agrees_with_hf_generate_bf16(seed):
    """Greedy rollouts of the Sampler (Triton kernels) against HF generate in bf16 on one random Qwen2 model.

    Two bf16 implementations may take different argmaxes where the top two logits are within rounding; past that
    point the sequences differ for good. So: report where each pair first diverges, and require that at the first
    divergence the two choices are a near-tie under a float32 forward of the shared prefix.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1fast.sampler import Sampler, SamplingParams

    config = Qwen2Config(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1024, max_position_embeddings=1024,
                         tie_word_embeddings=False, initializer_range=0.1)  # fmt: skip
    model = Qwen2ForCausalLM(config).to("cuda", torch.bfloat16).eval()
    prompts = [torch.randint(0, 1024, (int(n),)).tolist() for n in torch.randint(5, 200, (8,))]
    sampler = Sampler(model, block_size=16, max_num_seqs=64)
    groups = sampler.generate(prompts, SamplingParams(n=2, temperature=0.0, max_tokens=64, ignore_eos=True))
    wide = Qwen2ForCausalLM(config).to("cuda", torch.float32).eval()
    wide.load_state_dict(model.state_dict())
    report = []
    for prompt, group in zip(prompts, groups, strict=True):
        ids = torch.tensor([prompt], device="cuda")
        hf = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, min_new_tokens=64,
                            do_sample=False)[0, len(prompt) :].tolist()  # fmt: skip
        for completion in group.completions:
            ours = completion.token_ids
            assert len(ours) == 64
            i = first_divergence(ours, hf)
            report.append(64 if i is None else i)
            if i is None:
                continue
            prefix = torch.tensor([prompt + hf[:i]], device="cuda")
            with torch.no_grad():
                logits = wide(prefix).logits[0, -1].float()
            gap = (logits[hf[i]] - logits[ours[i]]).abs().item()
            assert gap < 0.02 * logits.abs().max().item() + 0.02, (i, gap)
    print("first divergence per completion (64 = none):", report)
