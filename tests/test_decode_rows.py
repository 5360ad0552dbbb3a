"""The host side of the decode rows: the completions' buffers and the block-table mirror, against plain Python."""

import random

import numpy as np
import pytest
import torch

from r1fast.sampler.decode_rows import COMPLETION, CompletionBuffer, CompletionTokens, DecodeRows, block_tables
from r1fast.sampler.sampling import SamplingParams, SamplingState
from r1fast.sampler.sequence import Sequence, Status


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_buffer_writes_and_reads_ragged_chunks_like_lists(seed, dtype):
    rng = random.Random(seed)
    completions, max_tokens = 7, 23
    buffer = CompletionBuffer(completions, max_tokens, dtype)
    want = [[] for _ in range(completions)]
    while any(len(w) < max_tokens for w in want):
        rows = [c for c in range(completions) if len(want[c]) < max_tokens]
        rng.shuffle(rows)
        steps = rng.choice([1, 2, 4, 8])
        values = np.array([[rng.randrange(1000) for _ in range(steps)] for _ in rows]).astype(dtype)
        full = rng.random() < 0.3  # every row takes the whole chunk (the unmasked write)
        counts = [min(steps if full else rng.randint(0, steps), max_tokens - len(want[c])) for c in rows]
        # a row with count 0 may be one that ended before the chunk: its start lies past its tokens
        starts = [len(want[c]) + (rng.randint(1, 4) if not count else 0) for c, count in zip(rows, counts, strict=True)]
        buffer.write(np.array(rows), np.array(starts), np.array(counts), values)
        for c, count, row in zip(rows, counts, values.tolist(), strict=True):
            want[c] += row[:count]
        assert buffer.filled.tolist() == [len(w) for w in want]
    picks = np.array([rng.randrange(completions) for _ in range(9)])
    starts = np.array([rng.randint(0, max_tokens) for _ in picks])
    stops = np.array([rng.randint(s, max_tokens) for s in starts.tolist()])
    got = buffer.read(picks, starts, stops)
    assert got == [want[c][a:b] for c, a, b in zip(picks.tolist(), starts.tolist(), stops.tolist(), strict=True)]
    assert buffer.read(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)) == []


def sequence(prompt_index, child_index, prompt, n=2):
    seq = Sequence(prompt_index * n + child_index, prompt_index, list(prompt), len(prompt), SamplingParams(n=n), 0,
                   child_index=child_index, status=Status.RUNNING)  # fmt: skip
    seq.num_cached = len(prompt)
    return seq


def test_token_lists_catch_up_with_the_buffer_only_where_behind():
    tokens = CompletionTokens(4, 10)
    seqs = [sequence(p, c, [9] * (3 + p)) for p in range(2) for c in range(2)]
    completions = np.arange(4)
    tokens.write(completions, np.zeros(4, np.int64), np.array([3, 0, 2, 3]), np.arange(12).reshape(4, 3))
    tokens.bring_up_to_date(seqs[:3], completions[:3])  # the fourth stays behind
    assert [s.completion_ids for s in seqs] == [[0, 1, 2], [], [6, 7], []]
    assert [s.num_cached for s in seqs] == [5, 3, 5, 4]  # len - 1 where tokens came; untouched elsewhere
    tokens.write(completions[:1], np.array([3]), np.array([2]), np.array([[20, 21]]))
    tokens.bring_up_to_date(seqs, completions)
    assert [s.completion_ids for s in seqs] == [[0, 1, 2, 20, 21], [], [6, 7], [9, 10, 11]]
    tokens.cut(seqs[0], 0, 2)  # a stop string ends it after two tokens
    tokens.bring_up_to_date(seqs, completions)
    assert seqs[0].completion_ids == [0, 1] and tokens.filled[0] == 2


def test_block_table_mirror_follows_the_lists(seed):
    rng = random.Random(seed)
    rows = DecodeRows(12, torch.device("cpu"), num_completions=16, max_tokens=8)
    state = lambda n: SamplingState.build([SamplingParams()] * n, [0] * n, [4] * n, [], 32, torch.device("cpu"))  # noqa: E731
    seqs = [sequence(p, c, [1, 2, 3]) for p in range(8) for c in range(2)]
    next_block = iter(range(1000))
    for seq in seqs:
        seq.block_table = [next(next_block) for _ in range(rng.randint(1, 3))]
    rows.join(seqs[:10], state(10), torch.zeros(10, dtype=torch.int64), np.full(10, 4))
    for step in range(20):
        if step == 5:  # a row leaves, new rows join
            rows.seqs[3].status = Status.FINISHED
            rows.keep([s for s in rows.seqs if s.status is Status.RUNNING])
            rows.join(seqs[10:], state(6), torch.zeros(6, dtype=torch.int64), np.full(6, 4))
        grow = np.array(sorted(rng.sample(range(len(rows.seqs)), rng.randint(0, 5))), dtype=np.int64)
        counts = np.array([rng.randint(1, 2) for _ in grow], dtype=np.int64)
        counts = np.minimum(counts, 12 - rows.table_lengths[grow])
        appended = [next(next_block) for _ in range(int(counts.sum()))]
        at = 0
        for i, count in zip(grow.tolist(), counts.tolist(), strict=True):
            rows.seqs[i].block_table += appended[at : at + count]
            at += count
        if step % 7 == 6:  # a copy-on-write replaced an entry: the mirror is read again
            rows.seqs[0].block_table[-1] = next(next_block)
            rows.tables_replaced()
        else:
            rows.blocks_appended(grow, counts, appended)
        want = block_tables(rows.seqs)
        assert torch.equal(rows.device_tables(), torch.from_numpy(want))
        everyone = np.arange(len(rows.seqs))
        assert rows.last_blocks(everyone).tolist() == [s.block_table[-1] for s in rows.seqs]
    assert rows.info[:, COMPLETION].tolist() == [s.prompt_index * 2 + s.child_index for s in rows.seqs]
    assert rows.lengths.tolist() == [4] * len(rows.seqs)
