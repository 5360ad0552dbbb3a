"""The paged sampler on CPU against Hugging Face's own forward and generate (tiny random models, fp32)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from r1fast import reference
from r1fast.sampler import Sampler, SamplingParams
from r1fast.sampler.attention import Batch, FlashAttn, flash_attention, torch_paged_attention

VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, eos_token_id=None, bos_token_id=None,
              pad_token_id=None)  # fmt: skip
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}  # fmt: skip
MODELS = {
    "llama-rope-llama3": lambda: LlamaForCausalLM(LlamaConfig(**COMMON, rope_scaling=LLAMA3_ROPE)),
    "qwen2-tied": lambda: Qwen2ForCausalLM(Qwen2Config(**COMMON, tie_word_embeddings=True)),
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**COMMON, head_dim=16, tie_word_embeddings=False)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**COMMON, sliding_window=4096)),  # window > max_model_len
}
PROMPTS = [[1, 2, 3, 4, 5], [7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17], [20]]


def make(name: str) -> torch.nn.Module:
    torch.manual_seed(0)  # weights only; sampling draws use the test's fresh seeds
    return MODELS[name]().eval()


def hf_greedy(model, prompt: list[int], new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False)  # fmt: skip
    return out[0, len(prompt) :].tolist()


def pool_of(model, blocks: int, block_size: int = 4) -> int:
    """kv_cache_memory for a pool of exactly `blocks` blocks."""
    return blocks * Sampler(model, block_size=block_size).runner.bytes_per_block(block_size)


def token_ids(groups) -> list[list[list[int]]]:
    return [[c.token_ids for c in g.completions] for g in groups]


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_matches_hf_generate_with_groups_and_preemption(name):
    model = make(name)
    # block_size 4: prompts and completions cross block boundaries; a 12-block pool cannot hold the 4 x 3
    # sequences of 13-20 tokens at once, so the scheduler must preempt and recompute.
    small = Sampler(model, block_size=4, kv_cache_memory=pool_of(model, 12))
    groups = small.generate(PROMPTS, SamplingParams(n=3, temperature=0, max_tokens=12, ignore_eos=True))
    assert small.last_scheduler.num_preemptions > 0
    for prompt, group in zip(PROMPTS, groups, strict=True):
        expected = hf_greedy(model, prompt, 12)
        assert [c.token_ids for c in group.completions] == [expected] * 3
        assert [c.finish_reason for c in group.completions] == ["length"] * 3
        assert [c.index for c in group.completions] == [0, 1, 2]
        assert [c.prompt_index for c in group.completions] == [group.prompt_index] * 3


@pytest.mark.parametrize(
    "rope, max_model_len",
    [
        ({"rope_type": "linear", "factor": 2.0}, None),
        ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}, None),
        ({"rope_type": "dynamic", "factor": 2.0}, 48),  # max_position_embeddings 16: generation runs past it
    ],
    ids=["linear", "yarn", "dynamic"],
)
def test_rope_scalings_match_hf_generate(rope, max_model_len):
    torch.manual_seed(0)
    max_pos = 16 if rope["rope_type"] == "dynamic" else 128
    model = LlamaForCausalLM(LlamaConfig(**{**COMMON, "max_position_embeddings": max_pos}, rope_scaling=rope)).eval()
    sampler = Sampler(model, block_size=4, max_model_len=max_model_len)
    new = 24
    groups = sampler.generate(PROMPTS[:3], SamplingParams(n=2, temperature=0, max_tokens=new, ignore_eos=True))
    for prompt, group in zip(PROMPTS[:3], groups, strict=True):  # HF generates each prompt alone, as dynamic needs
        assert [c.token_ids for c in group.completions] == [hf_greedy(model, prompt, new)] * 2


def test_reference_attention_backend_gives_the_same_tokens():
    model = make("qwen3")
    params = SamplingParams(n=2, temperature=0, max_tokens=6, ignore_eos=True)
    ref = Sampler(model, block_size=4, attention_backend="reference").generate(PROMPTS, params)
    vectorised = Sampler(model, block_size=4, attention_backend="torch").generate(PROMPTS, params)
    assert token_ids(ref) == token_ids(vectorised)


def test_torch_paged_attention_matches_the_reference(seed):
    # Ragged contexts and query runs (decode rows, whole prompts, tails after a cached prefix), GQA 3, pages in
    # shuffled order, unused cache rows NaN and table entries past a context pointing outside the pool.
    block_size, h_q, h_kv, d = 4, 6, 2, 8
    context_lens, q_lens = [7, 1, 12, 5, 9], [1, 1, 12, 3, 9]
    pages = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(pages) + 2
    order = torch.randperm(num_blocks)
    k_cache = torch.full((num_blocks, block_size, h_kv, d), float("nan"))
    v_cache = k_cache.clone()
    tables = torch.full((len(pages), max(pages) + 1), 10**6, dtype=torch.int32)
    start = 0
    for s, (n, p) in enumerate(zip(context_lens, pages, strict=True)):
        tables[s, :p] = order[start : start + p]
        start += p
        pos = torch.arange(n)
        blocks = tables[s].long()[pos // block_size]
        k_cache[blocks, pos % block_size] = torch.randn(n, h_kv, d)
        v_cache[blocks, pos % block_size] = torch.randn(n, h_kv, d)
    starts = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(sum(q_lens), h_q, d)
    lens = torch.tensor(context_lens, dtype=torch.int32)
    got = torch_paged_attention(q, k_cache, v_cache, tables, lens, starts, 0.3)
    want = reference.paged_attention(q.double(), k_cache.double(), v_cache.double(), tables, lens, starts, 0.3)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)


def dense_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """flash-attn's causal attention for one sequence: q [Lq, H_q, D] over k, v [Lk, H_kv, D], queries aligned to
    the last keys (bottom-right), GQA by repeating K/V heads."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * scale
    shift = k.shape[0] - q.shape[0]
    allowed = torch.arange(k.shape[0])[None, :] <= torch.arange(q.shape[0])[:, None] + shift
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
    return torch.einsum("hqk,khd->qhd", probs, v.double()).to(q.dtype)


def paged_rows(cache: torch.Tensor, table: torch.Tensor, n: int) -> torch.Tensor:
    pos = torch.arange(n)
    return cache[table.long()[pos // cache.shape[1]], pos % cache.shape[1]]


def fake_flash_attn(calls: list[str]) -> FlashAttn:
    """Stand-ins for flash_attn_varlen_func / flash_attn_with_kvcache with their documented semantics and layouts,
    which check the constraints flash-attn enforces (int32 metadata, page size % 256)."""

    def varlen(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale, causal, block_table=None):
        assert causal and cu_q.dtype == cu_k.dtype == torch.int32
        calls.append("varlen" if block_table is None else "varlen-paged")
        out = torch.empty_like(q)
        for s in range(cu_q.numel() - 1):
            lq, lk = int(cu_q[s + 1] - cu_q[s]), int(cu_k[s + 1] - cu_k[s])
            assert lq <= max_q and lk <= max_k
            if block_table is None:
                ks, vs = k[int(cu_k[s]) : int(cu_k[s + 1])], v[int(cu_k[s]) : int(cu_k[s + 1])]
            else:
                assert k.shape[1] % 256 == 0 and block_table.dtype == torch.int32
                ks, vs = paged_rows(k, block_table[s], lk), paged_rows(v, block_table[s], lk)
            out[int(cu_q[s]) : int(cu_q[s + 1])] = dense_causal(q[int(cu_q[s]) : int(cu_q[s + 1])], ks, vs,
                                                                softmax_scale)  # fmt: skip
        return out

    def with_kvcache(q, k_cache, v_cache, cache_seqlens, block_table, softmax_scale, causal):
        assert causal and k_cache.shape[1] % 256 == 0 and cache_seqlens.dtype == block_table.dtype == torch.int32
        calls.append("kvcache")
        out = torch.empty_like(q)
        for s in range(q.shape[0]):
            n = int(cache_seqlens[s])
            out[s] = dense_causal(q[s], paged_rows(k_cache, block_table[s], n), paged_rows(v_cache, block_table[s], n),
                                  softmax_scale)  # fmt: skip
        return out

    return FlashAttn(varlen, with_kvcache)


@pytest.mark.parametrize("block_size", [4, 256])
def test_flash_attn_dispatch_matches_the_reference(block_size, seed):
    # What attention() hands flash-attn on a GPU, against stand-ins with flash-attn's semantics: a fresh prefill at
    # any block size; with pages of 256, decode (flash_attn_with_kvcache) and a prefill after a cached prefix
    # (varlen with a block_table); with small pages, those two fall back (None).
    h_q, h_kv, d, scale = 4, 2, 8, 0.35
    calls: list[str] = []
    flash = fake_flash_attn(calls)
    context_lens, q_lens = [9, 3, 300], [[9, 3, 300], [1, 1, 1], [4, 3, 44]]
    pages = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(pages) + 1
    order = torch.randperm(num_blocks).to(torch.int32)
    tables = torch.zeros(len(pages), max(pages), dtype=torch.int32)
    start = 0
    for s, p in enumerate(pages):
        tables[s, :p] = order[start : start + p]
        start += p
    lens = torch.tensor(context_lens, dtype=torch.int32)
    for runs, fresh in zip(q_lens, (True, False, False), strict=True):
        k_cache = torch.randn(num_blocks, block_size, h_kv, d)
        v_cache = torch.randn(num_blocks, block_size, h_kv, d)
        starts = torch.tensor([0, *torch.tensor(runs).cumsum(0).tolist()], dtype=torch.int32)
        q = torch.randn(sum(runs), h_q, d)
        # The new tokens' K/V: the last runs[s] positions of each context, already stored in the caches.
        new = [(s, n, r) for s, (n, r) in enumerate(zip(context_lens, runs, strict=True))]
        k = torch.cat([paged_rows(k_cache, tables[s], n)[n - r :] for s, n, r in new])
        v = torch.cat([paged_rows(v_cache, tables[s], n)[n - r :] for s, n, r in new])
        batch = Batch(input_ids=torch.zeros(len(q)), positions=torch.zeros(len(q)), slot_mapping=torch.zeros(len(q)),
                      block_tables=tables, context_lens=lens, query_start_loc=starts, max_query_len=max(runs),
                      max_context_len=max(context_lens), fresh=fresh, decode=max(runs) == 1)  # fmt: skip
        got = flash_attention(q, k, v, k_cache, v_cache, batch, scale, flash)
        if block_size % 256 and not fresh:
            assert got is None
            continue
        want = reference.paged_attention(q.double(), k_cache.double(), v_cache.double(), tables, lens, starts, scale)
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
    assert calls == (["varlen"] if block_size == 4 else ["varlen", "kvcache", "varlen-paged"])


def test_forked_children_share_full_prompt_blocks(seed):
    model = make("qwen2-tied")
    sampler = Sampler(model, block_size=4)
    used = []
    runner = sampler.runner
    forward, decode_steps = runner.forward, runner.decode_steps

    def recording(fn):
        def call(*args):
            used.append(sampler.block_manager.num_blocks - sampler.block_manager.num_free)
            return fn(*args)

        return call

    runner.forward, runner.decode_steps = recording(forward), recording(decode_steps)
    prompts, g = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12, 13, 14]], 5  # a partial and an exactly full last block
    sampler.generate(prompts, SamplingParams(n=g, temperature=1.0, seed=seed, max_tokens=3, ignore_eos=True))
    # Prefill: each prompt's blocks once. The decode chunk (2 steps: positions 6-7 and 8-9): full prompt blocks still
    # shared; every child owns one tail block (a copy of the partial block, or a fresh one after a full block).
    assert used[0] == 2 + 2
    assert used[1] == (1 + g) + (2 + g)


def test_prefix_cache_shares_a_common_prompt_prefix():
    model = make("llama-rope-llama3")
    system = [5, 6, 7, 8, 9, 10, 11, 12, 13]  # two full blocks of 4, then one token more
    prompts = [system + [40], system + [41, 42, 43], system + [44, 45, 46, 47, 48, 49]]
    params = SamplingParams(n=2, temperature=0, max_tokens=5, ignore_eos=True)
    cached = Sampler(model, block_size=4)
    groups = cached.generate(prompts, params)
    # The first prompt computes the shared blocks; the other two read them in the same forward.
    assert cached.last_scheduler.num_prefix_hit_tokens == 2 * 8
    plain = Sampler(model, block_size=4, prefix_caching=False)
    assert token_ids(plain.generate(prompts, params)) == token_ids(groups)
    assert plain.last_scheduler.num_prefix_hit_tokens == 0
    for prompt, group in zip(prompts, groups, strict=True):
        assert [c.token_ids for c in group.completions] == [hf_greedy(model, prompt, 5)] * 2


def test_logprobs_equal_the_models_own_forward_and_siblings_stay_intact(seed):
    model = make("llama-rope-llama3")
    sampler = Sampler(model, block_size=4)
    temperature = 0.8
    params = SamplingParams(n=4, temperature=temperature, top_k=20, seed=seed, max_tokens=9, ignore_eos=True)
    groups = sampler.generate(PROMPTS[:3], params)
    for prompt, group in zip(PROMPTS[:3], groups, strict=True):
        completions = [c.token_ids for c in group.completions]
        assert len({tuple(c) for c in completions}) > 1  # the siblings really diverged
        for completion in group.completions:
            ids = torch.tensor([prompt + completion.token_ids])
            with torch.no_grad():
                logits = model(ids).logits[0, len(prompt) - 1 : -1]
            want = torch.log_softmax(logits / temperature, -1).gather(-1, ids[0, len(prompt) :, None])[:, 0]
            torch.testing.assert_close(torch.tensor(completion.logprobs), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transform", [{}, {"logits_scaling": 0.25}, {"final_logit_softcapping": 0.2}],
                         ids=lambda t: "-".join(t) or "none")  # fmt: skip
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_sampler_logprobs_are_what_the_trainer_recomputes_with_fused_linear_logprobs(backend, transform, seed):
    # The GRPO contract between the two halves: the log-probs the sampler returns for a completion are the ones
    # r1fast.fused_linear_logprobs computes from the policy's final hidden states and LM head (old_logps when
    # the trainer takes the sampler's), at the sampling temperature (Triton path through the interpreter), with
    # the model's logit transform read from its config by both (a Granite-style divisor, a Gemma2-style softcap).
    import r1fast
    from r1fast.logit_transform import LogitTransform

    model = make("qwen2-tied")
    for name, value in transform.items():
        setattr(model.config, name, value)
    options = LogitTransform.from_config(model.config).kwargs()
    temperature = 0.8
    groups = Sampler(model, block_size=4).generate(
        PROMPTS[:2], SamplingParams(n=2, temperature=temperature, top_k=20, max_tokens=7, ignore_eos=True, seed=seed)
    )
    for prompt, group in zip(PROMPTS[:2], groups, strict=True):
        for completion in group.completions:
            ids = torch.tensor([prompt + completion.token_ids])
            with torch.no_grad():
                hidden = model.model(ids).last_hidden_state[0, len(prompt) - 1 : -1]
            got = r1fast.fused_linear_logprobs(hidden, model.lm_head.weight, ids[0, len(prompt) :],
                                               temperature=temperature, backend=backend, **options)  # fmt: skip
            torch.testing.assert_close(torch.tensor(completion.logprobs), got, rtol=1e-5, atol=1e-5)
            if transform:  # the transform matters at these logits
                plain = r1fast.fused_linear_logprobs(hidden, model.lm_head.weight, ids[0, len(prompt) :],
                                                     temperature=temperature, backend=backend)  # fmt: skip
                assert (plain - got).abs().max() > 1e-3


def test_a_logit_transform_the_sampler_does_not_know_raises():
    model = make("qwen2-tied")
    model.config.logits_mup_width_multiplier = 2.0  # Inkling divides its final hidden states by it
    with pytest.raises(ValueError, match="logits_mup_width_multiplier"):
        Sampler(model)


def test_outputs_do_not_depend_on_block_size_pool_or_prefix_cache_and_no_block_leaks(seed):
    # Metamorphic: random prompts (some sharing prefixes), group sizes, stop ids, greedy and seeded sampling; the
    # tokens must not change with the block size, a pool small enough to preempt, or prefix caching, and every
    # block must be free again after each generate(). The last round is built to need both: five prompts sharing
    # a 12-token prefix, groups of 3 and 10 new tokens each, no stop id (a group alone outgrows the 9-block pool).
    rng = torch.Generator().manual_seed(seed)
    model = make("qwen3")
    randint = lambda lo, hi: int(torch.randint(lo, hi, (), generator=rng))  # noqa: E731
    base = [randint(0, VOCAB) for _ in range(12)]
    for pressure in (False, False, False, True):
        min_prefix, n, max_tokens = (12, 3, 10) if pressure else (1, randint(1, 4), randint(1, 10))
        prompts = [base[: randint(min_prefix, 13)] + [randint(0, VOCAB) for _ in range(randint(0, 6))]
                   for _ in range(5)]  # fmt: skip
        stop_ids = [] if pressure else [randint(0, VOCAB)]
        params = SamplingParams(n=n, temperature=[0.0, 1.0][randint(0, 2)], max_tokens=max_tokens,
                                stop_token_ids=stop_ids, seed=randint(0, 1000))  # fmt: skip
        want = token_ids(Sampler(model, block_size=16, prefix_caching=False).generate(prompts, params))
        preemptions = prefix_hits = 0
        for block_size, blocks, caching in ((1, 64, True), (3, 14, True), (4, 9, False), (5, 1000, True)):
            sampler = Sampler(model, block_size=block_size, kv_cache_memory=pool_of(model, blocks, block_size),
                              prefix_caching=caching)  # fmt: skip
            assert token_ids(sampler.generate(prompts, params)) == want, (block_size, blocks, caching, params)
            bm = sampler.block_manager
            assert bm.num_free == bm.num_blocks and set(bm.ref_counts) == {0}
            preemptions += sampler.last_scheduler.num_preemptions
            prefix_hits += sampler.last_scheduler.num_prefix_hit_tokens
    assert preemptions > 0 and prefix_hits > 0, (preemptions, prefix_hits)  # the pressure round did what it is for


def test_seeds_reproduce_and_differ(seed):
    sampler = Sampler(make("qwen3"), block_size=4)
    params = dict(n=3, temperature=1.0, max_tokens=8, ignore_eos=True)
    first = token_ids(sampler.generate(PROMPTS, SamplingParams(**params, seed=seed)))
    assert first == token_ids(sampler.generate(PROMPTS, SamplingParams(**params, seed=seed)))
    assert first != token_ids(sampler.generate(PROMPTS, SamplingParams(**params, seed=seed + 1)))
    # A seeded sequence's draws are keyed by its seed and position: preemption and recompute do not change them.
    model = sampler.runner.model
    small = Sampler(model, block_size=4, kv_cache_memory=pool_of(model, 12))
    assert token_ids(small.generate(PROMPTS, SamplingParams(**params, seed=seed))) == first
    assert small.last_scheduler.num_preemptions > 0


def test_generate_reads_the_weights_in_place_after_an_optimizer_step_and_after_free():
    model = make("qwen3")
    sampler = Sampler(model, block_size=4)
    params = SamplingParams(n=2, temperature=0, max_tokens=4, ignore_eos=True)
    before = token_ids(sampler.generate(PROMPTS[:2], params))
    # One optimizer step towards token 42 after every prompt token: the parameters change in place.
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    ids = torch.tensor([PROMPTS[0]])
    loss = torch.nn.functional.cross_entropy(model(ids).logits[0], torch.full((ids.shape[1],), 42))
    loss.backward()
    optimizer.step()
    after = token_ids(sampler.generate(PROMPTS[:2], params))
    expected = [[hf_greedy(model, p, 4)] * 2 for p in PROMPTS[:2]]
    assert after == expected
    assert after != before
    sampler.free()
    assert sampler.num_blocks == 0 and sampler.runner.k_caches == []
    assert token_ids(sampler.generate(PROMPTS[:2], params)) == expected


def test_stop_tokens_and_strings_and_min_tokens():
    model = make("qwen3")
    greedy = hf_greedy(model, PROMPTS[0], 10)
    stop_token = greedy[3]
    first = greedy.index(stop_token)

    class Words:
        def decode(self, ids):
            return " ".join(f"w{i}" for i in ids)

    sampler = Sampler(model, tokenizer=Words(), block_size=4)
    out = sampler.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=10, stop_token_ids=[stop_token]))
    assert out[0].completions[0].token_ids == greedy[: first + 1]
    assert out[0].completions[0].finish_reason == "stop"
    out = sampler.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=10, stop=[f"w{greedy[2]}"]))
    assert out[0].completions[0].token_ids == greedy[: greedy.index(greedy[2]) + 1]
    out = sampler.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=10, min_tokens=10,
                                                        stop_token_ids=[stop_token]))  # fmt: skip
    assert out[0].completions[0].token_ids == greedy  # the stop token is ignored until 10 tokens exist
    assert out[0].completions[0].finish_reason == ("stop" if greedy[-1] == stop_token else "length")


def test_eos_stops_unless_ignored_and_max_model_len_ends_with_length():
    model = make("qwen2-tied")
    greedy = hf_greedy(model, PROMPTS[1], 8)
    model.generation_config.eos_token_id = greedy[2]
    out = Sampler(model, block_size=4).generate([PROMPTS[1]], SamplingParams(temperature=0, max_tokens=8))
    assert out[0].completions[0].token_ids == greedy[: greedy.index(greedy[2]) + 1]
    assert out[0].completions[0].finish_reason == "stop"
    model.generation_config.eos_token_id = None
    short = Sampler(model, block_size=4, max_model_len=len(PROMPTS[1]) + 3)
    out = short.generate([PROMPTS[1]], SamplingParams(temperature=0, max_tokens=8, logprobs=False))
    assert out[0].completions[0].token_ids == greedy[:3]
    assert out[0].completions[0].finish_reason == "length" and out[0].completions[0].logprobs == []


def test_a_sequence_that_outgrows_the_whole_pool_raises_instead_of_looping():
    model = make("qwen2-tied")
    sampler = Sampler(model, block_size=4, kv_cache_memory=pool_of(model, 3))  # 12 tokens in all
    with pytest.raises(ValueError, match="needs 4 KV blocks but the pool has 3"):
        sampler.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    # The sampler is still usable afterwards: the next call starts from a clean pool.
    out = sampler.generate([PROMPTS[0]], SamplingParams(n=2, temperature=0, max_tokens=7, ignore_eos=True))
    assert token_ids(out) == [[hf_greedy(model, PROMPTS[0], 7)] * 2]


def test_bad_input_raises_clear_errors():
    model = make("qwen2-tied")
    sampler = Sampler(model, block_size=4, max_model_len=16)
    params = SamplingParams(max_tokens=2)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sampler.generate([[1, 2], []], params)
    with pytest.raises(ValueError, match="non-empty list"):
        sampler.generate([], params)
    with pytest.raises(ValueError, match="max_model_len"):
        sampler.generate([list(range(16))], params)
    with pytest.raises(ValueError, match="outside"):
        sampler.generate([[VOCAB]], params)
    with pytest.raises(TypeError, match="list of token ids"):
        sampler.generate(["hello"], params)
    with pytest.raises(TypeError, match="SamplingParams"):
        sampler.generate([[1]], {"n": 2})
    with pytest.raises(ValueError, match="n must be"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="stop strings need"):
        sampler.generate([[1]], SamplingParams(stop=["x"]))
    with pytest.raises(ValueError, match="unsupported model type"):
        Sampler(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)))
    with pytest.raises(ValueError, match="attention backend"):
        Sampler(model, attention_backend="flash")
    with pytest.raises(ValueError, match="block_size"):
        Sampler(model, block_size=0)
    with pytest.raises(ValueError, match="less than one KV block"):
        Sampler(model, kv_cache_memory=10)
    windowed = MistralForCausalLM(MistralConfig(**COMMON, sliding_window=8))
    with pytest.raises(ValueError, match="sliding window of 8"):
        Sampler(windowed)
    Sampler(windowed, max_model_len=8)  # fits in the window: exact
    longrope = dict(rope_type="longrope", factor=2.0, short_factor=[1.0] * 4, long_factor=[1.0] * 4,
                    original_max_position_embeddings=64)  # fmt: skip
    with pytest.raises(ValueError, match="unsupported rope type 'longrope'"):
        Sampler(LlamaForCausalLM(LlamaConfig(**COMMON, rope_scaling=longrope)))


def test_triton_attention_path_matches_hf_generate():
    # The kernels the sampler runs on CUDA, here through the Triton interpreter: prefill, decode and forks.
    torch.manual_seed(0)  # head_dim 64, a size the kernel supports
    model = Qwen2ForCausalLM(Qwen2Config(**{**COMMON, "hidden_size": 128, "num_attention_heads": 2}))
    model.eval()
    sampler = Sampler(model, block_size=4, attention_backend="triton")
    groups = sampler.generate(PROMPTS[:2], SamplingParams(n=2, temperature=0, max_tokens=6, ignore_eos=True))
    for prompt, group in zip(PROMPTS[:2], groups, strict=True):
        assert [c.token_ids for c in group.completions] == [hf_greedy(model, prompt, 6)] * 2


def test_triton_sampling_is_seeded_per_sequence_whatever_the_batch():
    # The Triton race (interpreted) keys each draw by (seed, prompt, child, position): a pool small enough to
    # preempt, or one prompt generated alone, gives every completion the same tokens.
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**{**COMMON, "hidden_size": 128, "num_attention_heads": 2})).eval()
    params = SamplingParams(n=3, temperature=1.0, max_tokens=6, ignore_eos=True, seed=11)
    sampler = Sampler(model, block_size=4, attention_backend="triton")
    assert sampler.runner.triton_sampling
    first = token_ids(sampler.generate(PROMPTS[:3], params))
    assert len({tuple(c) for c in first[0]}) > 1  # siblings diverge
    small = Sampler(model, block_size=4, attention_backend="triton", kv_cache_memory=pool_of(model, 10))
    assert token_ids(small.generate(PROMPTS[:3], params)) == first
    assert small.last_scheduler.num_preemptions > 0
    assert token_ids(sampler.generate(PROMPTS[:1], params)) == first[:1]


def test_unseeded_generate_follows_torch_manual_seed():
    sampler = Sampler(make("qwen3"), block_size=4)
    params = SamplingParams(n=2, temperature=1.0, max_tokens=6, ignore_eos=True)
    torch.manual_seed(5)
    first = token_ids(sampler.generate(PROMPTS, params))
    torch.manual_seed(5)
    assert token_ids(sampler.generate(PROMPTS, params)) == first
    assert token_ids(sampler.generate(PROMPTS, params)) != first


def test_padded_decode_chunk_of_a_cuda_graph_bucket_gives_the_eager_tokens():
    # What a captured K-step decode graph computes, run eagerly (Triton interpreter): the chunk's rows and state
    # copied into the static buffers and padded to their bucket must give the same tokens and log-probs.
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**{**COMMON, "hidden_size": 128, "num_attention_heads": 2})).eval()
    sampler = Sampler(model, block_size=4, attention_backend="triton", max_num_seqs=8, max_model_len=32)
    runner, checked = sampler.runner, []
    decode_steps = runner.decode_steps

    def checking(inputs, state, steps, seq_lens):
        if checked:
            return decode_steps(inputs, state, steps, seq_lens)
        static, static_state = runner.static_inputs(state)
        bucket = runner.stage(inputs, state, static, static_state)
        padded = runner._decode_steps(static.rows(bucket), static_state.rows(bucket), steps, runner.max_model_len,
                                      None)  # fmt: skip
        tokens, logprobs = decode_steps(inputs, state, steps, seq_lens)
        s = len(seq_lens)
        assert torch.equal(padded[0][:s], tokens)
        torch.testing.assert_close(padded[1][:s], logprobs, rtol=1e-5, atol=1e-5)
        assert torch.equal(static_state.position[:s], state.position)  # both advanced by `steps`
        checked.append((s, bucket, steps))
        return tokens, logprobs

    runner.decode_steps = checking
    sampler.generate(PROMPTS[:3], SamplingParams(temperature=1.0, seed=3, max_tokens=5, ignore_eos=True))
    assert checked == [(3, 4, 4)]
    assert runner.buckets() == [1, 2, 4, 8]


# -- CUDA ---------------------------------------------------------------------------------------------------------


def cuda_model(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)  # head_dim 64: the Triton kernels (and so the CUDA graphs) run
    config = Qwen2Config(**{**COMMON, "hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1})
    return Qwen2ForCausalLM(config).to(device="cuda", dtype=dtype).eval()


def cuda_greedy(model, prompt: list[int], new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False)  # fmt: skip
    return out[0, len(prompt) :].tolist()


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_greedy_on_cuda_matches_hf_generate(cuda_graphs):
    model = cuda_model()
    sampler = Sampler(model, block_size=16, max_num_seqs=8, cuda_graphs=cuda_graphs)
    groups = sampler.generate(PROMPTS, SamplingParams(n=2, temperature=0, max_tokens=20, ignore_eos=True))
    assert (sampler.runner.num_graph_replays > 0) == cuda_graphs
    for prompt, group in zip(PROMPTS, groups, strict=True):
        assert [c.token_ids for c in group.completions] == [cuda_greedy(model, prompt, 20)] * 2


@pytest.mark.gpu
def test_cuda_graphs_see_in_place_updates_and_replaced_parameters():
    model = cuda_model()
    sampler = Sampler(model, block_size=16, max_num_seqs=4)
    params = SamplingParams(n=3, temperature=0, max_tokens=8, ignore_eos=True)
    sampler.generate(PROMPTS[:1], params)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)  # in place: the captured graphs read it
    assert token_ids(sampler.generate(PROMPTS[:1], params)) == [[cuda_greedy(model, PROMPTS[0], 8)] * 3]
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() * 2.0)  # a new tensor: recapture
    assert token_ids(sampler.generate(PROMPTS[:1], params)) == [[cuda_greedy(model, PROMPTS[0], 8)] * 3]
    sampler.free()
    assert token_ids(sampler.generate(PROMPTS[:1], params)) == [[cuda_greedy(model, PROMPTS[0], 8)] * 3]


@pytest.mark.gpu
def test_bf16_logprobs_on_cuda_are_close_to_the_models_forward(seed):
    model = cuda_model(torch.bfloat16)
    sampler = Sampler(model, block_size=16)
    groups = sampler.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, seed=seed, max_tokens=16,
                                                      ignore_eos=True))  # fmt: skip
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for completion in group.completions:
            ids = torch.tensor([prompt + completion.token_ids], device="cuda")
            with torch.no_grad():
                logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
            want = torch.log_softmax(logits, -1).gather(-1, ids[0, len(prompt) :, None])[:, 0]
            torch.testing.assert_close(torch.tensor(completion.logprobs, device="cuda"), want, rtol=0, atol=0.1)


@pytest.mark.gpu
def test_bf16_greedy_agrees_with_hf_generate_up_to_near_ties(capsys):
    # bf16 attention kernels round differently from HF's eager path, so greedy decoding may part where two tokens
    # nearly tie. Where a completion first differs from HF generate, HF's own logits there must rank the two tokens
    # within bf16 noise; the first-divergence positions are printed (pytest -s) as the report.
    model = cuda_model(torch.bfloat16)
    sampler = Sampler(model, block_size=16, max_num_seqs=8)
    new_tokens = 48
    groups = sampler.generate(PROMPTS, SamplingParams(n=2, temperature=0, max_tokens=new_tokens, ignore_eos=True))
    report = []
    for prompt, group in zip(PROMPTS, groups, strict=True):
        hf = cuda_greedy(model, prompt, new_tokens)
        for completion in group.completions:
            ours = completion.token_ids
            first = next((i for i, (a, b) in enumerate(zip(ours, hf, strict=True)) if a != b), None)
            report.append(first)
            if first is None:
                continue
            with torch.no_grad():
                logits = model(torch.tensor([prompt + hf[:first]], device="cuda")).logits[0, -1].float()
            gap = (logits[hf[first]] - logits[ours[first]]).item()
            assert abs(gap) <= 0.125, (prompt, first, gap)  # HF generate (cached) vs a fresh forward: either sign
    with capsys.disabled():
        print(f"\nbf16 greedy vs HF generate, first divergence per completion (None = identical {new_tokens}): "
              f"{report}")  # fmt: skip


def test_fp32_head_projects_the_bf16_head_in_float32_and_generates():
    model = make("qwen2-tied").to(torch.bfloat16)
    hidden = torch.randn(3, 32, dtype=torch.bfloat16)
    exact = hidden.double() @ model.lm_head.weight.double().t()
    fp32 = Sampler(model, fp32_head=True).runner.head(hidden)
    bf16 = Sampler(model).runner.head(hidden)
    assert fp32.dtype == bf16.dtype == torch.float32
    assert ((fp32 - exact).norm() / exact.norm()).item() < 1e-6  # float32 accumulation of exact bf16 products
    assert ((bf16 - exact).norm() / exact.norm()).item() > 1e-4  # rounded to bf16
    groups = Sampler(model, fp32_head=True, block_size=4).generate(PROMPTS[:2], SamplingParams(n=2, max_tokens=3,
                                                                                              seed=0))  # fmt: skip
    assert all(len(c.token_ids) == 3 and len(c.logprobs) == 3 for g in groups for c in g.completions)
