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
    sampler's tokenizer; the completion ends with the token that completes the string). seed: None = unseeded;
    otherwise completion i of prompt p draws from its own generator seeded with (seed, p, i).
    logprobs: return the log-prob of each sampled token under log_softmax(logits / temperature) of the raw model
    logits — before repetition penalty and top-k/top-p/min-p filtering, i.e. what the trainer recomputes
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
        self.stop_token_ids = [int(t) for t in self.stop_token_ids]


def apply_repetition_penalty(logits: torch.Tensor, history: list[list[int]], penalty: list[float]) -> torch.Tensor:
    """HF's repetition penalty: a seen token's logit is divided by the penalty if positive, multiplied if not.

    logits: [S, V] float32 (modified copy returned); history: S token lists; penalty: S floats.
    """
    logits = logits.clone()
    for row, (tokens, p) in enumerate(zip(history, penalty, strict=True)):
        if p == 1.0 or not tokens:
            continue
        idx = torch.tensor(sorted(set(tokens)), device=logits.device)
        seen = logits[row, idx]
        logits[row, idx] = torch.where(seen > 0, seen / p, seen * p)
    return logits


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) what top-k, min-p and top-p (nucleus) exclude, row by row, in that order.

    logits: [S, V] float32 at temperature; top_k: [S] int (<= 0 = off); top_p, min_p: [S] float (1 / 0 = off).
    The most likely token of a row always survives. Returns [S, V].
    """
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), torch.full_like(top_k, vocab))
    sorted_logits = torch.sort(logits, dim=-1, descending=True).values
    kth = sorted_logits.gather(-1, (k - 1)[:, None])
    logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    logits = logits.masked_fill(probs < min_p[:, None] * probs.amax(-1, keepdim=True), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    above = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly above each token
    drop_sorted = above >= top_p[:, None]  # keep the smallest prefix whose mass reaches top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
    history: list[list[int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of each of S sequences, sampled on the logits' device in float32.

    logits: [S, V] raw model logits; params, generators, history (prompt + completion so far): one per row.
    Sampling is an exponential race, argmax_v p_v / E_v with E_v ~ Exp(1), which draws v with probability p_v; a
    seeded row draws its E from its own generator, the unseeded rows share one draw.
    Returns (tokens [S] int64, logprobs [S] float32 under log_softmax(raw logits / temperature)).
    """
    logits = logits.float()
    device = logits.device
    temps = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params], device=device)
    logprobs_all = torch.log_softmax(logits / temps[:, None], dim=-1)
    penalised = apply_repetition_penalty(logits, history, [p.repetition_penalty for p in params])
    greedy = torch.tensor([p.temperature == 0 for p in params], device=device)
    scaled = filter_logits(
        penalised / temps[:, None],
        torch.tensor([p.top_k for p in params], device=device),
        torch.tensor([p.top_p for p in params], device=device, dtype=torch.float32),
        torch.tensor([p.min_p for p in params], device=device, dtype=torch.float32),
    )
    noise = torch.empty_like(scaled)
    unseeded = [row for row, gen in enumerate(generators) if gen is None]
    if unseeded:
        noise[unseeded] = noise[unseeded].exponential_()
    for row, gen in enumerate(generators):
        if gen is not None:
            noise[row].exponential_(generator=gen)
    race = torch.softmax(scaled, dim=-1) / noise.clamp_min(torch.finfo(noise.dtype).tiny)
    tokens = torch.where(greedy, penalised.argmax(-1), race.argmax(-1))
    return tokens, logprobs_all.gather(-1, tokens[:, None])[:, 0]
