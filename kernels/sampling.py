"""Sample one token per row from scores with counter-based noise: one launch for a whole batch of seeded rows.

token[s] = argmax_v scores[s, v] - log E[s, v], with E ~ Exp(1) drawn by Philox keyed by the row's 64-bit seed at
counter (v, step[s]). This is the exponential race (equivalently Gumbel-max): it draws v with probability
softmax(scores[s])[v]. The noise of a row depends only on (seed, step, v), not on the batch it shares a launch
with or on the block sizes, so a seeded request reproduces whatever else runs beside it; no [S, V] noise tensor is
written. Bytes ~ S * V * 4 (one read of the scores).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Rows per program: 4 x 1024 scores per tile on a GPU; the interpreter's cost is per program, so it takes 256 rows
# (the draws do not depend on the tiling).
BLOCK_ROWS, INTERPRETER_BLOCK_ROWS = 4, 256
BLOCK_VOCAB = 1024
SERIES_BELOW = 0.01  # u below this: -log(1 - u) from its series (1 - u in float32 would drop u's low bits)


@triton.jit
def _exponential_race_kernel(
    scores_ptr, seeds_ptr, steps_ptr, out_ptr, num_rows, vocab, stride_row,
    BLOCK_S: tl.constexpr, BLOCK_V: tl.constexpr, SERIES_BELOW: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    row_ok = rows < num_rows
    seed = tl.load(seeds_ptr + rows, mask=row_ok, other=0).to(tl.uint64)
    step = tl.load(steps_ptr + rows, mask=row_ok, other=0).to(tl.uint32)
    cols = tl.arange(0, BLOCK_V)
    # Philox key and counter words, broadcast to the [BLOCK_S, BLOCK_V] tile once.
    key = tl.broadcast_to(seed[:, None], (BLOCK_S, BLOCK_V))
    counter1 = tl.broadcast_to(step[:, None], (BLOCK_S, BLOCK_V))
    zeros = tl.zeros((BLOCK_S, BLOCK_V), dtype=tl.uint32)
    best = tl.full((BLOCK_S,), float("-inf"), dtype=tl.float32)
    best_index = tl.zeros((BLOCK_S,), dtype=tl.int32)
    row_offset = rows.to(tl.int64) * stride_row
    for start in range(0, vocab, BLOCK_V):
        v = start + cols
        mask = row_ok[:, None] & (v < vocab)[None, :]
        s = tl.load(scores_ptr + row_offset[:, None] + v[None, :], mask=mask, other=float("-inf")).to(tl.float32)
        counter0 = tl.broadcast_to(v.to(tl.uint32)[None, :], (BLOCK_S, BLOCK_V))
        bits, _, _, _ = tl.philox(key, counter0, counter1, zeros, zeros)
        # u in (0, 1) with 2^-32 resolution near 0, where E = -log(1 - u) ~ u is small and decides the winners
        # (u's top end, rounded to 1 in float32, is held below 1: E <= 16.6 there, a draw that never wins).
        u = tl.minimum((bits.to(tl.float32) + 0.5) * 2.3283064365386963e-10, 0.99999994)
        small = u * (1.0 + u * (0.5 + u * (0.3333333333333333 + u * 0.25)))
        e = tl.where(u < SERIES_BELOW, small, -tl.log(1.0 - u))
        race = s - tl.log(e)
        race = tl.where(mask, race, float("-inf"))
        tile_best = tl.max(race, axis=1)
        tile_index = tl.argmax(race, axis=1) + start
        better = tile_best > best  # strict: the first of equal maxima wins, as torch.argmax
        best = tl.where(better, tile_best, best)
        best_index = tl.where(better, tile_index, best_index)
    tl.store(out_ptr + rows, best_index.to(tl.int64), mask=row_ok)


def exponential_race(scores: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One token per row drawn from softmax(scores[s]) with the noise of (seeds[s], steps[s]).

    scores: [S, V] float32/bf16/fp16, unit stride along V (-inf = excluded); seeds: [S] int64 (any 64-bit value);
    steps: [S] int64 draw counters (taken mod 2^32). A row whose every score is -inf returns 0.
    Returns [S] int64 on the scores' device. CUDA tensors (or TRITON_INTERPRET=1) only.
    """
    if scores.dim() != 2 or scores.stride(-1) != 1:
        raise ValueError(f"scores must be [S, V] with unit stride along V, got {tuple(scores.shape)}")
    if scores.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"scores must be float32/bfloat16/float16, got {scores.dtype}")
    num_rows = scores.shape[0]
    for name, t in (("seeds", seeds), ("steps", steps)):
        if t.shape != (num_rows,) or t.dtype != torch.int64 or t.device != scores.device:
            raise ValueError(f"{name} must be [{num_rows}] int64 on {scores.device}, got {tuple(t.shape)} "
                             f"{t.dtype} on {t.device}")  # fmt: skip
    out = torch.empty(num_rows, dtype=torch.int64, device=scores.device)
    if num_rows == 0:
        return out
    vocab = scores.shape[1]
    block_rows = INTERPRETER_BLOCK_ROWS if os.environ.get("TRITON_INTERPRET", "0") == "1" else BLOCK_ROWS
    _exponential_race_kernel[(triton.cdiv(num_rows, block_rows),)](
        scores, seeds, steps, out, num_rows, vocab, scores.stride(0),
        BLOCK_S=block_rows, BLOCK_V=min(BLOCK_VOCAB, triton.next_power_of_2(max(vocab, 16))),
        SERIES_BELOW=SERIES_BELOW,
    )  # fmt: skip
    return out
