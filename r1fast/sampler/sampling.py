"""Sampling parameters and the on-device sampling of the next token (float32)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """How to sample the completions of one generate() call.

    n: completions per prompt (the GRPO group size G). temperature: 0 means greedy. top_k: 0 or -1 = off.
    top_p in (0, 1]; min_p in [0, 1); repetition_penalty > 0 (1 = off; HF semantics over prompt + completion).
    max_tokens / min_tokens: completion length bounds (stop tokens and strings are ignored before min_tokens).
    stop_token_ids: extra stop ids (the model's EOS stops too unless ignore_eos). stop: stop strings (need the
    sampler's tokenizer; the completion ends with the token that completes the string). seed: None = drawn from
    torch's default CPU generator (torch.manual_seed reproduces a call); otherwise completion i of prompt p draws its
    t-th token from noise keyed by (seed, p, i) and t alone: preemption or batch composition do not change it.
    logprobs: return the log-prob of each sampled token under log_softmax(logits / temperature) of the model's logits
    (after its own logit transform, r1fast.logit_transform) — before repetition penalty and top-k/top-p/min-p
    filtering, i.e. what the trainer recomputes
    (temperature 0 reports log_softmax(logits)).
    """

    n: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 16
    min_tokens: int = 0
    stop_token_ids: list[int] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = True
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"n must be an int >= 1, got {self.n!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise ValueError(f"top_k must be an int >= -1 (0 or -1 = off), got {self.top_k!r}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (0 <= self.min_p < 1):
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not (isinstance(self.max_tokens, int) and self.max_tokens >= 1):
            raise ValueError(f"max_tokens must be an int >= 1, got {self.max_tokens!r}")
        if not (isinstance(self.min_tokens, int) and 0 <= self.min_tokens <= self.max_tokens):
            raise ValueError(f"min_tokens must be an int in [0, max_tokens], got {self.min_tokens!r}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")
        self.stop_token_ids = [int(t) for t in self.stop_token_ids]


SEED_BITS = 63  # seeds are stored in int64 tensors


def mix_seed(*values: int) -> int:
    """A SEED_BITS-bit seed from integers (splitmix64's finaliser folded over them): (seed, prompt, child) tuples
    that differ in any value give unrelated seeds."""
    mask = (1 << 64) - 1
    h = 0x9E3779B97F4A7C15
    for value in values:
        h = (h ^ (value & mask)) * 0xBF58476D1CE4E5B9 & mask
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & mask
        h ^= h >> 31
    return h & ((1 << SEED_BITS) - 1)


def apply_repetition_penalty(logits: torch.Tensor, history: list[list[int]], penalty: list[float]) -> torch.Tensor:
    """HF's repetition penalty: a seen token's logit is divided by the penalty if positive, multiplied if not.

    logits: [S, V] float32; history: S token lists (prompt + completion); penalty: S floats (1 = off).
    One scatter over the rows that have a penalty; returns a new [S, V] tensor (logits itself if no row has one).
    """
    rows = [r for r, (tokens, p) in enumerate(zip(history, penalty, strict=True)) if p != 1.0 and tokens]
    if not rows:
        return logits
    device = logits.device
    width = max(len(history[r]) for r in rows)
    ids = torch.tensor([history[r] + [0] * (width - len(history[r])) for r in rows], device=device)
    real = torch.tensor([[1] * len(history[r]) + [0] * (width - len(history[r])) for r in rows], device=device,
                        dtype=torch.int32)  # fmt: skip
    seen = torch.zeros(len(rows), logits.shape[1], dtype=torch.int32, device=device).scatter_add_(1, ids, real) > 0
    index = torch.tensor(rows, device=device)
    p = torch.tensor([penalty[r] for r in rows], device=device, dtype=logits.dtype)[:, None]
    sub = logits[index]
    out = logits.clone()
    out[index] = torch.where(seen, torch.where(sub > 0, sub / p, sub * p), sub)
    return out


def filter_logits(
    logits: torch.Tensor, top_k: list[int] | None, top_p: torch.Tensor | None, min_p: torch.Tensor | None
) -> torch.Tensor:
    """Mask (to -inf) what top-k, min-p and top-p (nucleus) exclude, row by row, in that order.

    logits: [S, V] float32 at temperature; top_k: S host ints (<= 0 = off; a top-k of the largest k, no full sort);
    top_p, min_p: [S] float on the logits' device (1 / 0 = off); None skips a filter for every row.
    The most likely token of a row always survives (ties with the k-th value survive too). Returns [S, V].
    """
    vocab = logits.shape[-1]
    if top_k is not None and any(k > 0 for k in top_k):
        k = [min(k, vocab) if k > 0 else 0 for k in top_k]
        k_index = torch.tensor([max(k_row, 1) - 1 for k_row in k]).to(logits.device, non_blocking=True)
        kth = torch.topk(logits, max(k), dim=-1).values.gather(-1, k_index[:, None])
        enabled = torch.tensor([k_row > 0 for k_row in k]).to(logits.device, non_blocking=True)
        logits = logits.masked_fill(enabled[:, None] & (logits < kth), float("-inf"))
    if min_p is not None:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < min_p[:, None] * probs.amax(-1, keepdim=True), float("-inf"))
    if top_p is not None:
        probs = torch.softmax(logits, dim=-1)
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        above = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly above each token
        drop_sorted = above >= top_p[:, None]  # keep the smallest prefix whose mass reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def torch_exponential_race(scores: torch.Tensor, seeds: list[int], steps: list[int]) -> torch.Tensor:
    """r1fast.kernels.sampling.exponential_race's contract with torch generators (one per row, seeded with
    mix_seed(seed, step)): argmax_v scores - log E, E ~ Exp(1). scores: [S, V] float32. Returns [S] int64."""
    noise = torch.empty_like(scores)
    for row, (seed, step) in enumerate(zip(seeds, steps, strict=True)):
        generator = torch.Generator(scores.device).manual_seed(mix_seed(seed, step))
        noise[row].exponential_(generator=generator)
    return (scores - noise.clamp_min(torch.finfo(noise.dtype).tiny).log()).argmax(-1)


def sample_next(
    logits: torch.Tensor,
    params: list[SamplingParams],
    seeds: list[int],
    steps: list[int],
    history: list[list[int]],
    *,
    kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of each of S sequences, sampled on the logits' device in float32.

    logits: [S, V] raw model logits; per row: params, a seed (< 2^63), a draw counter `steps` (the position being
    sampled, so that a row's draw depends on (seed, step) only, not on its batch), history (prompt + completion).
    Sampling is an exponential race, argmax_v scores_v - log E_v with E_v ~ Exp(1), which draws v with probability
    softmax(scores)_v; kernel=True runs it as one Triton launch with Philox noise (r1fast.kernels.sampling), else
    per row with torch generators. Greedy rows (temperature 0) take the argmax of the penalised logits.
    Returns (tokens [S] int64, logprobs [S] float32 under log_softmax(raw logits / temperature)).
    """
    logits = logits.float()
    device = logits.device
    # One host-to-device copy per dtype for the per-row settings.
    settings = torch.tensor([[p.temperature if p.temperature > 0 else 1.0, p.top_p, p.min_p] for p in params],
                            dtype=torch.float32).to(device, non_blocking=True)  # fmt: skip
    temps, top_p, min_p = settings.unbind(1)
    scaled = logits / temps[:, None]
    log_normaliser = torch.logsumexp(scaled, dim=-1)
    penalties = [p.repetition_penalty for p in params]
    penalised = apply_repetition_penalty(logits, history, penalties)
    greedy = [p.temperature == 0 for p in params]
    if all(greedy):
        tokens = penalised.argmax(-1)
    else:
        scores = scaled if penalised is logits else penalised / temps[:, None]
        scores = filter_logits(
            scores,
            [p.top_k for p in params],
            top_p if any(p.top_p < 1 for p in params) else None,
            min_p if any(p.min_p > 0 for p in params) else None,
        )
        if kernel:
            from r1fast.kernels.sampling import exponential_race

            counters = torch.tensor([seeds, steps], dtype=torch.int64).to(device, non_blocking=True)
            tokens = exponential_race(scores, counters[0], counters[1])
        else:
            tokens = torch_exponential_race(scores, seeds, steps)
        if any(greedy):
            tokens = torch.where(torch.tensor(greedy).to(device, non_blocking=True), penalised.argmax(-1), tokens)
    logprobs = scaled.gather(-1, tokens[:, None])[:, 0] - log_normaliser
    return tokens, logprobs
