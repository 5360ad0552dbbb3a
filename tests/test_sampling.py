"""Sampling on given logits: chi-square against the target distribution, filtering, seeds, log-probs."""

from __future__ import annotations

import math

import pytest
import torch
import triton
import triton.language as tl

from r1fast.sampler.sampling import (
    SamplingParams,
    SamplingState,
    apply_repetition_penalty,
    chunk_ends,
    counter_uniform,
    filter_logits,
    inverse_cdf_draw,
    mix_seed,
    philox,
    sample,
    sample_next,
)

DRAWS = 4000
# kernel=True: r1fast.kernels.sampling under the Triton interpreter (tests/conftest.py sets it without CUDA);
# kernel=False: the CPU's counter-based inverse-CDF draw.
PATHS = pytest.mark.parametrize("kernel", [False, True], ids=["cpu", "triton"])


def chi_square_critical(df: int, p: float = 1e-6) -> float:
    """Upper critical value of the chi-square distribution (Wilson-Hilferty approximation).

    p = 1e-6 per test: with a dozen such tests on fresh seeds, CI fails by chance about once in 80,000 runs."""
    z = {1e-6: 4.753}[p]
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def draw(logits: torch.Tensor, params: SamplingParams, seed: int, kernel: bool) -> torch.Tensor:
    """Counts of DRAWS tokens, one per row, each row with its own seed."""
    rows = logits.expand(DRAWS, -1)
    seeds = [mix_seed(seed, row) for row in range(DRAWS)]
    tokens, _ = sample_next(rows, [params] * DRAWS, seeds, [7] * DRAWS, [[]] * DRAWS, kernel=kernel)
    return torch.bincount(tokens, minlength=logits.shape[-1]).double()


def assert_follows(counts: torch.Tensor, probs: torch.Tensor) -> None:
    support = probs > 0
    assert counts[~support].sum() == 0, "a filtered-out token was sampled"
    expected = probs[support] * DRAWS
    stat = ((counts[support] - expected) ** 2 / expected).sum().item()
    assert stat < chi_square_critical(int(support.sum()) - 1), stat


LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
@PATHS
def test_temperature_samples_softmax_of_scaled_logits(temperature, seed, kernel):
    counts = draw(LOGITS, SamplingParams(temperature=temperature), seed, kernel)
    assert_follows(counts, torch.softmax(LOGITS.double() / temperature, -1))


@PATHS
def test_top_k_keeps_the_k_largest(seed, kernel):
    counts = draw(LOGITS, SamplingParams(top_k=3), seed, kernel)
    probs = torch.softmax(LOGITS.double(), -1)
    probs[3:] = 0
    assert_follows(counts, probs / probs.sum())


@PATHS
def test_top_p_keeps_the_smallest_prefix_reaching_p(seed, kernel):
    probs = torch.softmax(LOGITS.double(), -1)
    cumulative = probs.cumsum(0)
    keep = int((cumulative < 0.8).sum()) + 1  # the prefix whose mass first reaches 0.8
    counts = draw(LOGITS, SamplingParams(top_p=0.8), seed, kernel)
    probs[keep:] = 0
    assert_follows(counts, probs / probs.sum())


@PATHS
def test_min_p_drops_tokens_below_a_fraction_of_the_top(seed, kernel):
    probs = torch.softmax(LOGITS.double(), -1)
    counts = draw(LOGITS, SamplingParams(min_p=0.2), seed, kernel)
    probs[probs < 0.2 * probs.max()] = 0
    assert_follows(counts, probs / probs.sum())


@PATHS
def test_greedy_logprobs_and_seeded_reproducibility(seed, kernel):
    logits = torch.randn(5, 11)
    params = [SamplingParams(temperature=0.0)] * 5
    seeds, steps = [mix_seed(seed, row) for row in range(5)], [3] * 5
    tokens, logps = sample_next(logits, params, seeds, steps, [[]] * 5, kernel=kernel)
    assert torch.equal(tokens, logits.argmax(-1))
    torch.testing.assert_close(logps, torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0])
    sampled = [SamplingParams(temperature=0.9, top_k=4)] * 5
    a, la = sample_next(logits, sampled, seeds, steps, [[]] * 5, kernel=kernel)
    b, _ = sample_next(logits, sampled, seeds, steps, [[]] * 5, kernel=kernel)
    assert torch.equal(a, b)
    # The returned log-prob is of the unfiltered temperature-scaled distribution (what the trainer recomputes).
    torch.testing.assert_close(la, torch.log_softmax(logits / 0.9, -1).gather(-1, a[:, None])[:, 0])
    # A row's draw depends on its (seed, step) only: alone, or next to other rows, it draws the same token.
    alone = sample_next(logits[2:3], sampled[:1], seeds[2:3], steps[2:3], [[]], kernel=kernel)[0]
    assert alone.item() == a[2].item()


@PATHS
def test_mixed_batch_greedy_rows_and_seeded_rows_and_a_penalised_row(seed, kernel):
    # Greedy, sampled and penalised rows in one batch: greedy rows take the argmax of the penalised logits.
    torch.manual_seed(seed)
    logits = torch.randn(4, 37)
    params = [SamplingParams(temperature=0.0, repetition_penalty=3.0), SamplingParams(temperature=1.3),
              SamplingParams(temperature=0.0), SamplingParams(temperature=0.7, top_p=0.9, min_p=0.05)]  # fmt: skip
    top = int(logits[0].argmax())
    history = [[top], [], [], []]
    tokens, logps = sample_next(logits, params, [1, 2, 3, 4], [0] * 4, history, kernel=kernel)
    assert tokens[0].item() == int(apply_repetition_penalty(logits[:1], [[top]], [3.0]).argmax())
    assert tokens[0].item() != top or logits[0, top] <= 0
    assert tokens[2].item() == int(logits[2].argmax())
    temps = torch.tensor([1.0, 1.3, 1.0, 0.7])[:, None]
    want = torch.log_softmax(logits / temps, -1).gather(-1, tokens[:, None])[:, 0]
    torch.testing.assert_close(logps, want)


def test_both_draws_give_a_long_flat_tail_its_mass(seed):
    # 8,192 equally likely tail tokens (1/16,384 each) next to one token of probability 1/2: a tail token wins the
    # race only with small noise E (~1e-4), the regime where the kernel's uniform -> exponential map must keep its
    # precision; the inverse CDF must resolve steps of 1/16,384 over a float64 cumulative sum.
    from r1fast.kernels.sampling import exponential_race

    vocab, rows = 8_193, 512
    scores = torch.zeros(rows, vocab)
    scores[:, 0] = math.log(vocab - 1)  # P(token 0) = (V - 1) / (2 (V - 1)) = 1 / 2
    seeds = torch.tensor([mix_seed(seed, r) for r in range(rows)])
    steps = torch.zeros(rows, dtype=torch.int64)
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    for tokens in (exponential_race(scores, seeds, steps), inverse_cdf_draw(weights, counter_uniform(seeds, steps))):
        head = (tokens == 0).sum().item()
        # Binomial(512, 1/2): 6 standard deviations is 68.
        assert abs(head - rows / 2) < 68, head
        assert len(set(tokens[tokens != 0].tolist())) > 0.9 * (rows - head)  # the tail spreads over many tokens


@triton.jit
def _philox_words(seeds_ptr, c0_ptr, c1_ptr, out_ptr, N: tl.constexpr):
    i = tl.arange(0, N)
    bits, _, _, _ = tl.philox(tl.load(seeds_ptr + i).to(tl.uint64), tl.load(c0_ptr + i).to(tl.uint32),
                              tl.load(c1_ptr + i).to(tl.uint32), tl.zeros((N,), tl.uint32),
                              tl.zeros((N,), tl.uint32))  # fmt: skip
    tl.store(out_ptr + i, bits.to(tl.int64) & 0xFFFFFFFF)


def test_philox_in_tensor_ops_gives_tritons_philox_bits(seed):
    # The CPU's counter-based uniforms come from the same Philox4x32-10 stream as the Triton race's noise.
    n = 64
    seeds = torch.randint(-(1 << 63), (1 << 63) - 1, (n,), dtype=torch.int64)
    seeds[:4] = torch.tensor([0, 1, -1, (1 << 63) - 1])
    c0 = torch.randint(0, 1 << 32, (n,), dtype=torch.int64)
    c1 = torch.randint(0, 1 << 32, (n,), dtype=torch.int64)
    c1[:2] = torch.tensor([0, (1 << 32) - 1])
    want = torch.empty(n, dtype=torch.int64)
    _philox_words[(1,)](seeds, c0, c1, want, N=n)
    assert torch.equal(philox(seeds, c0, c1), want)
    u = counter_uniform(seeds, c1)
    assert ((u > 0) & (u < 1)).all() and u.dtype == torch.float64


def test_cpu_draw_depends_on_seed_and_step_only(seed):
    # A row's token is a function of (its weights, seed, step): the same in any batch, and other seeds or steps move it.
    torch.manual_seed(seed)
    weights = torch.rand(1, 2500).expand(256, -1).contiguous()  # three blocks of the two-level sum, the last partial
    weights[:, 1000:1100] = 0.0
    seeds = torch.tensor([mix_seed(seed, r) for r in range(256)])
    steps = torch.arange(256)
    draw = lambda rows: inverse_cdf_draw(weights[rows], counter_uniform(seeds[rows], steps[rows]))  # noqa: E731
    tokens = draw(slice(None))
    order = torch.randperm(256)
    assert torch.equal(draw(order), tokens[order])
    assert torch.equal(draw(slice(7, 8)), tokens[7:8])
    assert len(set(tokens.tolist())) > 200 and not ((tokens >= 1000) & (tokens < 1100)).any()
    # The draw inverts the float64 cumulative distribution: the token is where the row's uniform falls.
    cdf = weights.double().cumsum(-1)
    target = counter_uniform(seeds, steps)[:, None] * cdf[:, -1:]
    assert torch.equal(tokens, (cdf <= target).sum(-1).clamp_max(2499))


def test_sampling_state_keeps_per_row_settings_and_records_tokens(seed):
    # State built once per row; take() / cat() reorder rows with their settings; record() fills the seen set that
    # the repetition penalty reads, and advances the draw counter.
    params = [SamplingParams(temperature=0, repetition_penalty=2.0), SamplingParams(temperature=0.5, top_k=3)]
    state = SamplingState.build(params, [5, 6], [10, 20], [[1, 2], [3]], 8, torch.device("cpu"))
    assert state.seen.nonzero().tolist() == [[0, 1], [0, 2], [1, 3]]
    assert state.top_k.tolist() == [0, 3] and state.top_k_max == 3 and state.any_greedy and not state.all_greedy
    state.record(torch.tensor([4, 5]))
    assert state.position.tolist() == [11, 21] and state.seen[0, 4] and state.seen[1, 5]
    swapped = state.take(torch.tensor([1, 0]))
    assert swapped.seed.tolist() == [6, 5] and torch.equal(swapped.seen, state.seen.flip(0))
    both = SamplingState.cat([state, swapped])
    assert both.seed.tolist() == [5, 6, 6, 5] and both.seen.shape == (4, 8)
    logits = torch.zeros(4, 8)
    logits[:, 4] = 1.0  # row 0 has seen token 4: penalised to 0.5, still the argmax; the others sample
    tokens, _ = sample(logits, both)
    assert tokens[0].item() == 4


def test_chunk_ends_stop_at_the_first_stop_id_past_min_length_or_at_max_length():
    # Four rows of a 4-step chunk, lengths 10 before it: a stop id at step 2 (counts), a stop id before min_length
    # (ignored) then one after, max_length inside the chunk, and a row already past its end (a wasted chunk).
    params = [SamplingParams()] * 4
    state = SamplingState.build(params, [0] * 4, [10] * 4, [], 50, torch.device("cpu"), min_lengths=[0, 12, 0, 0],
                                max_lengths=[100, 100, 12, 9])  # fmt: skip
    tokens = torch.tensor([[1, 7, 7, 2], [7, 3, 7, 7], [1, 2, 3, 4], [7, 7, 7, 7]])
    lengths = torch.full((4,), 10)
    assert chunk_ends(tokens, lengths, state, torch.tensor([7])).tolist() == [-2, -3, 2, 0]
    assert chunk_ends(tokens, lengths, state, None).tolist() == [4, 4, 2, 0]


def test_exponential_race_rejects_bad_input():
    from r1fast.kernels.sampling import exponential_race

    scores, seeds, steps = torch.zeros(3, 5), torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64)
    bad = [(scores[0], seeds, steps), (scores.long(), seeds, steps), (scores, seeds[:2], steps),
           (scores, seeds, steps.int()), (scores.t(), seeds, steps)]  # fmt: skip
    for args in bad:
        with pytest.raises(ValueError):
            exponential_race(*args)


def test_repetition_penalty_follows_hf_semantics():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = apply_repetition_penalty(logits, [[0, 1, 1]], [2.0])
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    # Rows without a penalty are untouched; each penalised row sees its own history only.
    rows = torch.tensor([[2.0, -1.0, 0.5], [2.0, -1.0, 0.5], [2.0, -1.0, 0.5]])
    out = apply_repetition_penalty(rows, [[0], [0, 1], [2, 2]], [1.0, 4.0, 0.5])
    assert out.tolist() == [[2.0, -1.0, 0.5], [0.5, -4.0, 0.5], [2.0, -1.0, 1.0]]


def test_filter_logits_keeps_the_top_token_and_works_per_row():
    logits = torch.tensor([[0.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    out = filter_logits(logits, torch.tensor([1, 0]), torch.tensor([0.01, 0.5]), torch.tensor([0.99, 0.0]))
    assert torch.isfinite(out[0]).any()  # ties: nothing strictly below the k-th value is dropped
    assert torch.isfinite(out[1]).tolist() == [True, False, False]  # row 2: top-p 0.5 keeps the argmax only
    out = filter_logits(torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]]), torch.tensor([2, -1]), None, None)
    assert torch.isfinite(out).tolist() == [[True, True, False, False], [True] * 4]  # top-k per row, -1 = off


@pytest.mark.parametrize("bad", [dict(n=0), dict(temperature=-1.0), dict(top_p=0.0), dict(min_p=1.0),
                                 dict(top_k=-2), dict(max_tokens=0), dict(min_tokens=5, max_tokens=2),
                                 dict(repetition_penalty=0.0), dict(stop=[""]), dict(seed=1.5)])  # fmt: skip
def test_bad_sampling_params_raise(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


@pytest.mark.gpu
def test_exponential_race_on_gpu_follows_a_qwen_sized_softmax(seed):
    # V = 151,936 (Qwen2.5), 200,000 draws from one row: tokens binned by probability rank into 20 bins of equal
    # expected mass (the head tokens are their own bins), chi-square against the exact bin masses.
    from r1fast.kernels.sampling import exponential_race

    torch.manual_seed(seed)
    vocab, draws = 151_936, 200_000
    logits = torch.randn(vocab, dtype=torch.float64, device="cuda") * 2.5
    probs = torch.softmax(logits, -1)
    order = torch.argsort(probs, descending=True)
    bins = torch.empty(vocab, dtype=torch.int64, device="cuda")
    bins[order] = torch.clamp((torch.cumsum(probs[order], 0) - probs[order]) * 20, max=19).long()
    scores = logits.float().expand(draws, -1)  # row stride 0: every draw reads the same row
    seeds = torch.randint(0, 1 << 62, (draws,), device="cuda")
    tokens = exponential_race(scores, seeds, torch.zeros(draws, dtype=torch.int64, device="cuda"))
    counts = torch.bincount(bins[tokens], minlength=20).double()
    expected = torch.zeros(20, dtype=torch.float64, device="cuda").index_add_(0, bins, probs) * draws
    support = expected > 0
    stat = ((counts[support] - expected[support]) ** 2 / expected[support]).sum().item()
    assert stat < chi_square_critical(int(support.sum()) - 1), stat
