"""Sampling parameters and the on-device sampling of the next token (float32)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
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
NO_LENGTH_LIMIT = 1 << 62  # SamplingState.max_length of a row without one


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


PHILOX_ROUND_A, PHILOX_ROUND_B = 0xD2511F53, 0xCD9E8D57  # Philox4x32-10, as triton.language.philox
PHILOX_KEY_A, PHILOX_KEY_B = 0x9E3779B9, 0xBB67AE85
UINT32 = 0xFFFFFFFF


def philox(seed: torch.Tensor, counter0: torch.Tensor, counter1: torch.Tensor) -> torch.Tensor:
    """The first output word of Philox4x32-10 keyed by a 64-bit seed at counter (counter0, counter1, 0, 0): the
    bits `tl.philox(seed, counter0, counter1, 0, 0)[0]` gives in r1fast.kernels.sampling, in int64 tensor ops.

    seed: int64 (any 64-bit value, the key's low and high words); counter0, counter1: int64 in [0, 2^32); all
    broadcast together. Returns int64 in [0, 2^32). The 32 x 32 -> 64-bit products wrap in int64; their high word is
    recovered with a mask after the arithmetic shift.
    """
    k0, k1 = seed & UINT32, (seed >> 32) & UINT32
    c0, c1 = counter0, counter1
    c2 = c3 = torch.zeros((), dtype=torch.int64, device=seed.device)
    for _ in range(10):
        product_b, product_a = PHILOX_ROUND_B * c2, PHILOX_ROUND_A * c0
        c0, c2 = ((product_b >> 32) & UINT32) ^ c1 ^ k0, ((product_a >> 32) & UINT32) ^ c3 ^ k1
        c1, c3 = product_b & UINT32, product_a & UINT32
        k0, k1 = (k0 + PHILOX_KEY_A) & UINT32, (k1 + PHILOX_KEY_B) & UINT32
    return c0


def counter_uniform(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One uniform in (0, 1) per row keyed by (seed, step) alone: (philox(seed, 0, step) + 0.5) / 2^32, the word the
    Triton race draws for token 0 at that step. seeds, steps: int64, broadcast together ([S], or [S, 1] and [S, K] for
    the K steps of a decode chunk; steps taken mod 2^32). Returns float64 of the broadcast shape."""
    return (philox(seeds, torch.zeros_like(steps), steps & UINT32).double() + 0.5) * 2.0**-32


@dataclass
class SamplingState:
    """Per-row sampling settings and state of S sequences, on the device, built once when the rows join a batch.

    temperature [S] float32 (0 = greedy); top_k [S] int64 (0 = off, else <= V); top_p, min_p, penalty [S] float32
    (1 / 0 / 1 = off); seed [S] int64 (< 2^63); position [S] int64: the position (= draw counter) of the row's next
    sampled token, i.e. its length; min_length [S] int64: a stop id ends the row only from this length on (prompt +
    min_tokens); max_length [S] int64: the length at which the row ends at the latest (prompt + max_tokens, at most
    max_model_len); seen [S, V] bool: the tokens of its prompt + completion (the repetition penalty's set, updated in
    place by record()), None when no row has a penalty. The host flags (all_greedy, top_k_max, use_top_p, use_min_p)
    decide which passes run without reading the device.
    """

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    penalty: torch.Tensor
    seed: torch.Tensor
    position: torch.Tensor
    min_length: torch.Tensor
    max_length: torch.Tensor
    seen: torch.Tensor | None
    all_greedy: bool
    any_greedy: bool
    top_k_max: int
    use_top_p: bool
    use_min_p: bool
    unit_temperature: bool = False  # every temperature is 0 or 1: no division

    @staticmethod
    def build(params: list[SamplingParams], seeds: list[int], positions: list[int], history: list[list[int]],
              vocab: int, device: torch.device, min_lengths: list[int] | None = None,
              max_lengths: list[int] | None = None) -> SamplingState:  # fmt: skip
        """The state of S new rows: their params, seeds (< 2^63), positions of their next draw (their lengths),
        histories (prompt + completion token ids, read only when a row has a repetition penalty), and the lengths
        that bound their stops (default: stop ids count from the start, no length limit). One host-to-device copy per
        dtype (plus one scatter for the seen set)."""
        distinct = {id(p): p for p in params}  # a generate() call gives every row the same params
        unique = list(distinct.values())
        position_of = {key: i for i, key in enumerate(distinct)}
        which = np.fromiter((position_of[id(p)] for p in params), np.int64, count=len(params)) if len(unique) > 1 \
            else np.zeros(len(params), np.int64)  # fmt: skip
        top_k_of = [min(p.top_k, vocab) if p.top_k > 0 else 0 for p in unique]
        floats = np.array([[p.temperature, p.top_p, p.min_p, p.repetition_penalty] for p in unique],
                          dtype=np.float32).reshape(-1, 4)[which]  # fmt: skip
        ints = np.empty((5, len(params)), np.int64)
        ints[0] = np.array(top_k_of, dtype=np.int64)[which] if unique else 0
        ints[1], ints[2] = seeds, positions
        ints[3] = 0 if min_lengths is None else min_lengths
        ints[4] = NO_LENGTH_LIMIT if max_lengths is None else max_lengths
        floats = torch.from_numpy(floats).to(device, non_blocking=True)
        ints = torch.from_numpy(ints).to(device, non_blocking=True)
        greedy = [p.temperature == 0 for p in unique]
        return SamplingState(
            temperature=floats[:, 0], top_p=floats[:, 1], min_p=floats[:, 2], penalty=floats[:, 3],
            top_k=ints[0], seed=ints[1], position=ints[2].clone(), min_length=ints[3], max_length=ints[4],
            seen=seen_bitmap(history, vocab, device) if any(p.repetition_penalty != 1.0 for p in unique) else None,
            all_greedy=all(greedy), any_greedy=any(greedy), top_k_max=max(top_k_of, default=0),
            use_top_p=any(p.top_p < 1 for p in unique), use_min_p=any(p.min_p > 0 for p in unique),
            unit_temperature=all(p.temperature in (0.0, 1.0) for p in unique),
        )  # fmt: skip

    ROWS = ("temperature", "top_k", "top_p", "min_p", "penalty", "seed", "position", "min_length", "max_length",
            "seen")  # fmt: skip

    def _flags(self) -> dict:
        return dict(all_greedy=self.all_greedy, any_greedy=self.any_greedy, top_k_max=self.top_k_max,
                    use_top_p=self.use_top_p, use_min_p=self.use_min_p,
                    unit_temperature=self.unit_temperature)  # fmt: skip

    def flags(self) -> tuple:
        """What decides the code path of sample() (a CUDA graph's key)."""
        return (*self._flags().values(), self.seen is not None)

    def rows(self, b: int) -> SamplingState:
        """Views of the first b rows (a CUDA-graph bucket of max-size buffers)."""
        return SamplingState(**{k: None if getattr(self, k) is None else getattr(self, k)[:b] for k in self.ROWS},
                             **self._flags())  # fmt: skip

    def take(self, rows: torch.Tensor) -> SamplingState:
        """The state of rows `rows` ([R] int64 on the device), in that order."""
        return SamplingState(**{k: None if getattr(self, k) is None else getattr(self, k)[rows] for k in self.ROWS},
                             **self._flags())  # fmt: skip

    @staticmethod
    def cat(states: list[SamplingState]) -> SamplingState:
        """The rows of several states, in order (a state without a seen set next to one with: its rows get an empty
        set, right for rows without a penalty)."""
        if len(states) == 1:
            return states[0]
        if any(s.seen is not None for s in states):
            vocab = next(s.seen.shape[1] for s in states if s.seen is not None)
            for s in states:
                if s.seen is None:
                    s.seen = torch.zeros(s.seed.shape[0], vocab, dtype=torch.bool, device=s.seed.device)
        return SamplingState(
            **{k: None if states[0].seen is None and k == "seen" else torch.cat([getattr(s, k) for s in states])
               for k in SamplingState.ROWS},
            all_greedy=all(s.all_greedy for s in states), any_greedy=any(s.any_greedy for s in states),
            top_k_max=max(s.top_k_max for s in states), use_top_p=any(s.use_top_p for s in states),
            use_min_p=any(s.use_min_p for s in states), unit_temperature=all(s.unit_temperature for s in states),
        )  # fmt: skip

    def record(self, tokens: torch.Tensor) -> None:
        """After a draw: each row's token joins its seen set and its position advances. tokens: [S] int64. In place
        (CUDA-graph capturable)."""
        if self.seen is not None:
            self.seen.scatter_(1, tokens[:, None], True)
        self.position.add_(1)


def chunk_ends(tokens: torch.Tensor, lengths: torch.Tensor, state: SamplingState,
               stop_ids: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """Where each row's chunk of K new tokens ends, found on the device: [S] int64, the number of its tokens that
    count (k + 1 at the first token k that is a stop id at a length >= min_length, or the last token max_length
    allows), negated (-n) where a stop id ended the row, K where the row goes on (0 for a row already at its
    max_length: a chunk that ran past the row's end).

    tokens: [S, K] int64; lengths: [S] int64, the rows' lengths before the chunk; state: the rows' min_length and
    max_length; stop_ids: [n] int64, or None when no token stops a row."""
    steps = tokens.shape[1]
    limit = (state.max_length - lengths).clamp(0, steps)
    if stop_ids is None:
        return limit
    k = torch.arange(1, steps + 1, device=tokens.device)
    hit = (tokens[..., None] == stop_ids).any(-1) & (lengths[:, None] + k >= state.min_length[:, None])
    stop_at = torch.where(hit, k, steps + 1).amin(1)
    return torch.where(stop_at <= limit, -stop_at, limit)


def seen_bitmap(history: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[S, V] bool: whether token v occurs in row s's history (S token-id lists)."""
    seen = torch.zeros(len(history), vocab, dtype=torch.bool)
    rows = [r for r, tokens in enumerate(history) for _ in tokens]
    if rows:
        seen[rows, [t for tokens in history for t in tokens]] = True
    return seen.to(device, non_blocking=True)


def penalise(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """HF's repetition penalty: a seen token's logit is divided by the penalty if positive, multiplied if not.
    logits: [S, V] float32; seen: [S, V] bool; penalty: [S] float32 (1 = off). Returns a new [S, V] tensor."""
    p = penalty[:, None]
    return torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)


def apply_repetition_penalty(logits: torch.Tensor, history: list[list[int]], penalty: list[float]) -> torch.Tensor:
    """penalise() with the seen sets of S token lists (prompt + completion) and S host penalties (1 = off).
    logits: [S, V] float32. Returns a new [S, V] tensor."""
    seen = seen_bitmap(history, logits.shape[1], logits.device)
    return penalise(logits, seen, torch.tensor(penalty, dtype=logits.dtype, device=logits.device))


def filter_logits(
    logits: torch.Tensor,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    min_p: torch.Tensor | None,
    top_k_max: int | None = None,
) -> torch.Tensor:
    """Mask (to -inf) what top-k, min-p and top-p (nucleus) exclude, row by row, in that order.

    logits: [S, V] float32 at temperature; top_k: [S] int64 on the logits' device (<= 0 = off; a top-k of the
    largest k, no full sort; top_k_max: the largest k as a host int, read from the device when None); top_p, min_p:
    [S] float (1 / 0 = off); None skips a filter for every row. The most likely token of a row always survives
    (ties with the k-th value survive too). Returns [S, V].
    """
    vocab = logits.shape[-1]
    if top_k is not None:
        k = top_k.clamp(0, vocab)
        k_max = int(k.max()) if top_k_max is None else min(top_k_max, vocab)
        if k_max > 0:
            kth = torch.topk(logits, k_max, dim=-1).values.gather(-1, (k.clamp_min(1) - 1)[:, None])
            logits = logits.masked_fill((k > 0)[:, None] & (logits < kth), float("-inf"))
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


CDF_BLOCK = 1024  # vocabulary entries per block of the two-level cumulative sum (a float64 cumsum is slow on CPU)


def inverse_cdf_draw(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The CPU draw: one token per row with probability proportional to weights[s] (unnormalised, >= 0, some > 0),
    by inverting its cumulative distribution at uniform[s] (the counter-based uniform of the row's seed and position,
    counter_uniform): one batched computation, no generators; a row's token depends on its weights and uniform alone.

    The cumulative sum is two-level: the masses of blocks of CDF_BLOCK entries locate the block, then the block's own
    float64 cumulative sum the token (a zero-weight token is never drawn). weights: [S, V] float32; uniform: [S]
    float64 in (0, 1). Returns [S] int64.

    Not the Triton kernel's exponential race (same distribution, other tokens): the race needs a Philox evaluation
    per vocabulary entry, which in CPU tensor ops costs seconds per step at V = 151,936 (benchmarks/RESULTS.md).
    """
    rows, vocab = weights.shape
    block = min(CDF_BLOCK, vocab)
    full = vocab // block
    # Block masses (float32 sums of <= CDF_BLOCK entries, accumulated in float64 across blocks), no padded copy.
    masses = weights[:, : full * block].unflatten(1, (full, block)).sum(-1)
    if full * block < vocab:
        masses = torch.cat([masses, weights[:, full * block :].sum(-1, keepdim=True)], 1)
    cumulative = masses.double().cumsum(-1)  # [S, blocks]
    target = uniform[:, None] * cumulative[:, -1:]
    j = torch.searchsorted(cumulative, target, right=True).clamp_max(masses.shape[1] - 1)  # [S, 1]: first mass above
    below = torch.where(j > 0, cumulative.gather(1, (j - 1).clamp_min(0)), 0.0)
    columns = j * block + torch.arange(block, device=weights.device)  # [S, block]
    inner = weights.gather(1, columns.clamp_max(vocab - 1)).masked_fill(columns >= vocab, 0.0).double().cumsum(-1)
    residual = torch.minimum(target - below, inner[:, -1:] * (1 - 2.0**-40))  # rounding: stay inside the block
    return j[:, 0] * block + torch.searchsorted(inner, residual, right=True)[:, 0].clamp_max(block - 1)


def sample(logits: torch.Tensor, state: SamplingState, *, kernel: bool = False,
           uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The next token of each of S rows, sampled on the logits' device in float32 from the rows' state (no host
    reads: CUDA-graph capturable when kernel=True).

    logits: [S, V] raw model logits. Draws are keyed by (state.seed, state.position) alone, so a row's token does not
    depend on its batch: kernel=True runs the exponential race argmax_v scores_v - log E_v (E ~ Exp(1) from Philox)
    as one Triton launch (r1fast.kernels.sampling), else inverse_cdf_draw at uniform ([S] float64; default
    counter_uniform(state.seed, state.position), which a multi-step decode computes for all its steps at once). Greedy
    rows (temperature 0) take the
    argmax of the penalised logits. Returns (tokens [S] int64, logprobs [S] float32 under log_softmax(raw logits /
    temperature); temperature 0 reports log_softmax(logits)). Does not advance the state (see record()).
    """
    logits = logits.float()
    temps = torch.where(state.temperature > 0, state.temperature, 1.0)[:, None]
    scaled = logits if state.unit_temperature else logits / temps
    top = scaled.amax(-1, keepdim=True)
    weights = (scaled - top).exp_()  # softmax(scaled) unnormalised: the log-probs' normaliser and the CPU draw
    log_normaliser = top[:, 0] + weights.sum(-1).log()
    penalised = logits if state.seen is None else penalise(logits, state.seen, state.penalty)
    if state.all_greedy:
        tokens = penalised.argmax(-1)
    else:
        filters = state.top_k_max > 0 or state.use_top_p or state.use_min_p
        scores = scaled if penalised is logits else penalised / temps
        if filters:
            scores = filter_logits(scores, state.top_k if state.top_k_max > 0 else None,
                                   state.top_p if state.use_top_p else None,
                                   state.min_p if state.use_min_p else None, top_k_max=state.top_k_max)  # fmt: skip
        if kernel:
            from r1fast.kernels.sampling import exponential_race

            tokens = exponential_race(scores, state.seed, state.position)
        else:
            if scores is not scaled:
                weights = torch.exp(scores - scores.amax(-1, keepdim=True))
            if uniform is None:
                uniform = counter_uniform(state.seed, state.position)
            tokens = inverse_cdf_draw(weights, uniform)
        if state.any_greedy:
            tokens = torch.where(state.temperature == 0, penalised.argmax(-1), tokens)
    logprobs = scaled.gather(-1, tokens[:, None])[:, 0] - log_normaliser
    return tokens, logprobs


def sample_next(
    logits: torch.Tensor,
    params: list[SamplingParams],
    seeds: list[int],
    steps: list[int],
    history: list[list[int]],
    *,
    kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sample() for S rows given as host lists: params, seeds (< 2^63), draw counters `steps` (the positions being
    sampled) and histories (prompt + completion). logits: [S, V]. Returns (tokens [S] int64, logprobs [S] float32)."""
    state = SamplingState.build(params, seeds, steps, history, logits.shape[-1], logits.device)
    return sample(logits, state, kernel=kernel)
