"""Multi-step decode (K steps per host round trip, stops detected on the device), with and without async scheduling
(chunk t + 1 launched before the host reads chunk t), gives the one-step loop's outputs."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from r1fast.sampler import Sampler, SamplingParams
from r1fast.sampler.sequence import Status

VOCAB = 61
PROMPTS = [[1, 2, 3, 4, 5], [7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17], [20]]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)  # weights only
    config = Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                         eos_token_id=None, bos_token_id=None, pad_token_id=None)  # fmt: skip
    return Qwen3ForCausalLM(config).eval()


class Words:
    """A tokenizer stand-in for stop strings: token t decodes to " w<t>"."""

    def decode(self, ids):
        return "".join(f" w{i}" for i in ids)


def outputs(groups) -> list:
    return [[(c.token_ids, c.logprobs, c.finish_reason) for c in g.completions] for g in groups]


def assert_same(got: list, want: list) -> None:
    """Tokens and finish reasons equal; log-probs equal up to float32 rounding (rows that stopped stay in a chunk's
    batch until its end, and a matmul's rounding may depend on its batch)."""
    assert [[(t, r) for t, _, r in g] for g in got] == [[(t, r) for t, _, r in g] for g in want]
    flat = lambda out: torch.tensor([x for g in out for _, logps, _ in g for x in logps])  # noqa: E731
    torch.testing.assert_close(flat(got), flat(want), rtol=1e-5, atol=1e-5)


def run(model, prompts, params, decode_steps, blocks=None, async_scheduling=False, **kwargs):
    """outputs and the scheduler of one generate(), after checking that every block is free again. Async runs also
    count the rows that ended in a chunk while the next was in flight (their steps there are wasted) as
    scheduler.wasted_rows."""
    bytes_per_block = Sampler(model, block_size=4).runner.bytes_per_block(4)
    sampler = Sampler(model, block_size=4, tokenizer=Words(), decode_steps=decode_steps,
                      kv_cache_memory=None if blocks is None else blocks * bytes_per_block,
                      async_scheduling=async_scheduling, **kwargs)  # fmt: skip
    wasted, take_chunk = [], sampler._take_chunk

    def counting(chunk, *args):
        wasted.append(sum(s.status is not Status.RUNNING for s in chunk.seqs))
        return take_chunk(chunk, *args)

    sampler._take_chunk = counting
    out = outputs(sampler.generate(prompts, params))
    bm = sampler.block_manager
    assert bm.num_free == bm.num_blocks and set(bm.ref_counts) == {0}, "a block leaked"
    scheduler = sampler.last_scheduler
    scheduler.wasted_rows = sum(wasted)
    return out, scheduler


# (decode_steps, async_scheduling) against the one-step loop; async with K = 4 looks ahead in every case (9-13
# tokens), with K = 8 where the first chunk leaves tokens.
MODES = {"K8": (8, False), "K8-async": (8, True), "K4-async": (4, True)}


CASES = {
    # seeded sampling with every filter and the repetition penalty; 11 tokens: chunks of 8 and 2 after the prefill
    "seeded-filters-penalty": dict(n=3, temperature=0.9, top_k=20, top_p=0.9, min_p=0.02, repetition_penalty=1.3,
                                   max_tokens=11, ignore_eos=True),
    # stop ids that end rows mid-chunk, ignored before min_tokens
    "stop-ids-min-tokens": dict(n=4, temperature=1.0, max_tokens=13, min_tokens=3, stop_token_ids=[3, 17, 29, 42]),
    # greedy with the penalty (the seen sets of greedy rows); stop ids the greedy rows reach at tokens 4 (ignored:
    # min_tokens), 5 and 6
    "greedy-penalty": dict(n=2, temperature=0.0, repetition_penalty=1.5, max_tokens=9, min_tokens=5,
                           stop_token_ids=[52, 18, 37, 48]),
    # stop strings, found on the host inside a chunk and cut there (" w1" also matches inside " w12")
    "stop-strings": dict(n=3, temperature=1.0, max_tokens=12, stop=[" w1", "w7 w"], min_tokens=1),
}  # fmt: skip


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", list(CASES))
def test_multi_step_outputs_equal_one_step_outputs(model, case, mode, seed):
    decode_steps, async_scheduling = MODES[mode]
    params = SamplingParams(**CASES[case], seed=seed)
    want, _ = run(model, PROMPTS, params, decode_steps=1)
    got, scheduler = run(model, PROMPTS, params, decode_steps, async_scheduling=async_scheduling)
    assert_same(got, want)
    lengths = {len(c[0]) for g in want for c in g}
    if case != "seeded-filters-penalty":
        assert len(lengths) > 1, lengths  # rows really ended at different steps (mid-chunk)
    assert (scheduler.num_chunks_ahead > 0) == async_scheduling or mode == "K8-async"
    if mode == "K4-async" and case != "seeded-filters-penalty":
        assert scheduler.wasted_rows > 0  # rows ended inside a chunk while the next one ran


@pytest.mark.parametrize("mode", list(MODES))
def test_multi_step_with_preemption_and_prefix_hits_equals_one_step(model, mode, seed):
    # Five prompts sharing a 12-token prefix, groups of 3, 10 new tokens: a 16-block pool cannot hold them all, so
    # chunks shrink to what fits and sequences are preempted and recomputed; the prefix is shared.
    decode_steps, async_scheduling = MODES[mode]
    rng = torch.Generator().manual_seed(seed)
    base = torch.randint(0, VOCAB, (12,), generator=rng).tolist()
    prompts = [base + torch.randint(0, VOCAB, (i,), generator=rng).tolist() for i in range(5)]
    params = SamplingParams(n=3, temperature=1.0, max_tokens=10, seed=seed, ignore_eos=True)
    want, _ = run(model, prompts, params, decode_steps=1)
    got, scheduler = run(model, prompts, params, decode_steps, blocks=16, async_scheduling=async_scheduling)
    assert_same(got, want)
    assert scheduler.num_preemptions > 0 and scheduler.num_prefix_hit_tokens > 0


@pytest.mark.parametrize("mode", list(MODES))
def test_max_model_len_ends_rows_inside_a_chunk(model, mode):
    decode_steps, async_scheduling = MODES[mode]
    params = SamplingParams(n=2, temperature=0.0, max_tokens=30, ignore_eos=True)
    want, _ = run(model, PROMPTS, params, decode_steps=1, max_model_len=14)
    got, _ = run(model, PROMPTS, params, decode_steps, max_model_len=14, async_scheduling=async_scheduling)
    assert_same(got, want)
    assert [len(g[0][0]) for g in got] == [14 - len(p) for p in PROMPTS]


def test_decode_steps_must_be_a_power_of_two(model):
    for bad in (0, 3, 2.0):
        with pytest.raises(ValueError, match="decode_steps"):
            Sampler(model, decode_steps=bad)


# -- CUDA ---------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_graph_chunks_equal_eager_one_step_outputs(case, async_scheduling):
    # The K-step CUDA graphs (one per bucket and K) against the eager one-step loop on the same GPU; async: chunk t + 1
    # is staged into the graph's buffers and replayed before the host reads chunk t (stream order keeps them apart).
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)  # head_dim 64: the Triton kernels (and so the graphs) run
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=128, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         eos_token_id=None, bos_token_id=None, pad_token_id=None)  # fmt: skip
    gpu = Qwen2ForCausalLM(config).cuda().eval()
    params = SamplingParams(**CASES[case], seed=1)
    want, _ = run(gpu, PROMPTS, params, decode_steps=1, blocks=256, cuda_graphs=False)
    memory = Sampler(gpu, block_size=4).runner.bytes_per_block(4) * 256
    sampler = Sampler(gpu, block_size=4, tokenizer=Words(), decode_steps=4, max_num_seqs=16, kv_cache_memory=memory,
                      async_scheduling=async_scheduling)  # fmt: skip
    got = outputs(sampler.generate(PROMPTS, params))
    assert sampler.runner.num_graph_replays > 0
    assert (sampler.last_scheduler.num_chunks_ahead > 0) == async_scheduling
    bm = sampler.block_manager
    assert bm.num_free == bm.num_blocks and set(bm.ref_counts) == {0}, "a block leaked"
    assert_same(got, want)
