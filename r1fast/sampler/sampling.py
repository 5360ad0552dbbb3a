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


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float, min_p: float) -> torch.Tensor:
    """Mask (to -inf) the tokens top-k, top-p (nucleus) and min-p exclude. logits: [V] float32 at temperature."""
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if min_p > 0:
        logits = logits.masked_fill(probs < min_p * probs.max(), float("-inf"))
        probs = torch.softmax(logits, dim=-1)
    if top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly above each token
        drop = torch.zeros_like(probs, dtype=torch.bool)
        drop[order] = before >= top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
    history: list[list[int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of each of S sequences.

    logits: [S, V] raw model logits; params, generators, history (prompt + completion so far): one per row.
    Returns (tokens [S] int64, logprobs [S] float32 under log_softmax(raw logits / temperature)).
    """
    logits = logits.float()
    temps = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params], device=logits.device)
    logprobs_all = torch.log_softmax(logits / temps[:, None], dim=-1)
    penalised = apply_repetition_penalty(logits, history, [p.repetition_penalty for p in params])
    tokens = torch.empty(len(params), dtype=torch.int64, device=logits.device)
    for row, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if p.temperature == 0:
            tokens[row] = torch.argmax(penalised[row])
            continue
        scaled = filter_logits(penalised[row] / p.temperature, p.top_k, p.top_p, p.min_p)
        probs = torch.softmax(scaled, dim=-1)
        tokens[row] = torch.multinomial(probs, 1, generator=gen)[0]
    return tokens, logprobs_all.gather(-1, tokens[:, None])[:, 0]
