"""Sampling on given logits: chi-square against the target distribution, filtering, seeds, log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from r1fast.sampler.sampling import SamplingParams, apply_repetition_penalty, filter_logits, sample_next

DRAWS = 4000


def chi_square_critical(df: int, p: float = 1e-4) -> float:
    """Upper critical value of the chi-square distribution (Wilson-Hilferty approximation)."""
    z = {1e-4: 3.719}[p]
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def draw(logits: torch.Tensor, params: SamplingParams, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rows = logits.expand(DRAWS, -1)
    tokens, _ = sample_next(rows, [params] * DRAWS, [gen] * DRAWS, [[]] * DRAWS)
    return torch.bincount(tokens, minlength=logits.shape[-1]).double()


def assert_follows(counts: torch.Tensor, probs: torch.Tensor) -> None:
    support = probs > 0
    assert counts[~support].sum() == 0, "a filtered-out token was sampled"
    expected = probs[support] * DRAWS
    stat = ((counts[support] - expected) ** 2 / expected).sum().item()
    assert stat < chi_square_critical(int(support.sum()) - 1), stat


LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_temperature_samples_softmax_of_scaled_logits(temperature, seed):
    counts = draw(LOGITS, SamplingParams(temperature=temperature), seed)
    assert_follows(counts, torch.softmax(LOGITS.double() / temperature, -1))


def test_top_k_keeps_the_k_largest(seed):
    counts = draw(LOGITS, SamplingParams(top_k=3), seed)
    probs = torch.softmax(LOGITS.double(), -1)
    probs[3:] = 0
    assert_follows(counts, probs / probs.sum())


def test_top_p_keeps_the_smallest_prefix_reaching_p(seed):
    probs = torch.softmax(LOGITS.double(), -1)
    cumulative = probs.cumsum(0)
    keep = int((cumulative < 0.8).sum()) + 1  # the prefix whose mass first reaches 0.8
    counts = draw(LOGITS, SamplingParams(top_p=0.8), seed)
    probs[keep:] = 0
    assert_follows(counts, probs / probs.sum())


def test_min_p_drops_tokens_below_a_fraction_of_the_top(seed):
    probs = torch.softmax(LOGITS.double(), -1)
    counts = draw(LOGITS, SamplingParams(min_p=0.2), seed)
    probs[probs < 0.2 * probs.max()] = 0
    assert_follows(counts, probs / probs.sum())


def test_greedy_logprobs_and_seeded_reproducibility(seed):
    logits = torch.randn(5, 11)
    params = [SamplingParams(temperature=0.0)] * 5
    tokens, logps = sample_next(logits, params, [None] * 5, [[]] * 5)
    assert torch.equal(tokens, logits.argmax(-1))
    torch.testing.assert_close(logps, torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0])
    sampled = [SamplingParams(temperature=0.9, top_k=4)] * 5
    a, la = sample_next(logits, sampled, [torch.Generator().manual_seed(seed)] * 5, [[]] * 5)
    b, _ = sample_next(logits, sampled, [torch.Generator().manual_seed(seed)] * 5, [[]] * 5)
    assert torch.equal(a, b)
    # The returned log-prob is of the unfiltered temperature-scaled distribution (what the trainer recomputes).
    torch.testing.assert_close(la, torch.log_softmax(logits / 0.9, -1).gather(-1, a[:, None])[:, 0])


def test_repetition_penalty_follows_hf_semantics():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = apply_repetition_penalty(logits, [[0, 1, 1]], [2.0])
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]


def test_filter_logits_keeps_the_top_token_and_works_per_row():
    logits = torch.tensor([[0.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    out = filter_logits(logits, torch.tensor([1, 0]), torch.tensor([0.01, 0.5]), torch.tensor([0.99, 0.0]))
    assert torch.isfinite(out[0]).any()  # ties: nothing strictly below the k-th value is dropped
    assert torch.isfinite(out[1]).tolist() == [True, False, False]  # row 2: top-p 0.5 keeps the argmax only


@pytest.mark.parametrize("bad", [dict(n=0), dict(temperature=-1.0), dict(top_p=0.0), dict(min_p=1.0),
                                 dict(top_k=-2), dict(max_tokens=0), dict(min_tokens=5, max_tokens=2),
                                 dict(repetition_penalty=0.0), dict(stop=[""])])  # fmt: skip
def test_bad_sampling_params_raise(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)
