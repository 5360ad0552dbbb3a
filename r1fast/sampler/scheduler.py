"""Continuous batching: which sequences run the next forward; preemption by recompute when blocks run out."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from r1fast.sampler.block_manager import BlockManager
from r1fast.sampler.sequence import Sequence, Status

if TYPE_CHECKING:
    from r1fast.sampler.decode_rows import DecodeRows


class Scheduler:
    """Waiting sequences are prefilled first (oldest first); otherwise every running sequence decodes a chunk of
    `num_steps` tokens (a power of two up to the caller's max_steps and the most tokens any row has left, rounded up
    where that wastes at most a quarter of the chunk; a row with fewer left ends inside the chunk, and its steps past
    its end write nothing), with the K/V blocks of every step reserved up front (fewer steps when the pool cannot
    hold them).

    When a running sequence needs a block and none is free, the newest running sequence is preempted: its blocks
    are freed (its computed full blocks named first, so that its recompute may find them) and it goes back to the
    front of the queue, to be recomputed from its tokens. A sequence that does not fit into the whole pool raises
    ValueError instead of waiting forever.

    `running` is in admission order with each group's children right after their parent: the sampler's decode rows
    follow this order, and a decode schedule reads the rows' lengths and block tables from them (DecodeRows: numpy
    arrays, no Python per row) and writes the blocks it appends to their mirror.
    """

    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int | None = None) -> None:  # fmt: skip
        self.blocks = block_manager
        self.max_model_len = max_model_len
        self.decoding = False  # what the last schedule() returned: decode rows (True) or sequences to prefill
        self.num_steps = 1  # decode steps the last schedule() or schedule_ahead() reserved blocks for
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.num_prefix_hit_tokens = 0  # prompt tokens whose K/V came from the prefix cache instead of a forward
        self.num_chunks_ahead = 0  # decode chunks scheduled while the one before was in flight (schedule_ahead)
        self.num_left = 0  # running sequences that finished or were preempted so far

    def add(self, seq: Sequence) -> None:
        seq.max_length = seq.num_prompt_tokens + seq.params.max_tokens
        if self.max_model_len is not None:
            seq.max_length = min(seq.max_length, self.max_model_len)
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _seats(self, seq: Sequence) -> int:
        return max(seq.fork, 1)

    def can_admit(self) -> bool:
        """Whether the oldest waiting sequence has seats now (the pool aside): then the next schedule() prefills."""
        if not self.waiting:
            return False
        return sum(self._seats(s) for s in self.running) + self._seats(self.waiting[0]) <= self.max_num_seqs

    def fork(self, parent: Sequence, children: list[Sequence]) -> None:
        """Start a prefilled parent's children: they share its blocks and run right after it."""
        for child in children:
            self.blocks.fork(parent, child)
            child.max_length = parent.max_length
        at = self.running.index(parent) + 1
        self.running[at:at] = children

    def schedule(self, max_steps: int, rows: DecodeRows) -> list[Sequence]:
        """The sequences of the next forward: waiting ones to prefill (they join `running`), else all running, with
        blocks for num_steps decode steps. rows: the decode rows, which are the running sequences (nothing in flight).

        A waiting sequence first takes the cached blocks of its prompt's longest cached prefix. While others run, it
        is admitted only if the pool keeps one free block per running sequence (each may need one at its next
        decode step), so that admitting it does not immediately preempt it again.
        """
        scheduled = self._admit()
        self.decoding = not scheduled
        if scheduled:
            self.running.extend(scheduled)
            return scheduled
        self.num_steps = self._reserve_chunk(max_steps, rows, in_flight=False)
        if not self.num_steps:
            rows.sync()  # preemption reads the sequences' own token lists
            self.num_steps = self._preempt_for_one_step()
            rows.tables_replaced()
        return list(self.running)

    def schedule_ahead(self, max_steps: int, rows: DecodeRows) -> int:
        """Reserve blocks for the decode chunk after the one in flight, assuming that every running sequence goes on
        through it (rows.lengths count its tokens, which are on the device but not yet in token_ids): the chunk's
        steps, or 0 when no row has tokens left past it or the pool cannot hold one more step (no preemption: that
        waits until the host has read the chunk in flight)."""
        steps = self._reserve_chunk(max_steps, rows, in_flight=True)
        if steps:
            self.num_steps = steps
            self.num_chunks_ahead += 1
        return steps

    def _admit(self) -> list[Sequence]:
        scheduled: list[Sequence] = []
        tokens = 0
        seats = sum(self._seats(s) for s in self.running) if self.waiting else 0
        while self.waiting:
            seq = self.waiting[0]
            busy = bool(scheduled or self.running)
            if busy and seats + self._seats(seq) > self.max_num_seqs:
                break
            self.blocks.match_prefix(seq)
            if scheduled and tokens + seq.num_new_tokens > self.max_num_batched_tokens:
                self.blocks.free(seq)
                break
            if not self.blocks.can_reserve(seq, headroom=seats + self._seats(seq) if busy else 0):
                needed = self.blocks.blocks_needed(seq) + len(seq.block_table)
                self.blocks.free(seq)
                if not busy and needed > self.blocks.num_blocks:
                    raise ValueError(
                        f"a sequence of {len(seq)} tokens needs {needed} KV blocks but the pool has "
                        f"{self.blocks.num_blocks}: give the sampler more kv_cache_memory or a smaller max_model_len"
                    )
                break
            self.blocks.reserve(seq)
            self.blocks.cache_full_blocks(seq)
            self.waiting.popleft()
            seq.status = Status.RUNNING
            scheduled.append(seq)
            self.num_prefix_hit_tokens += seq.num_cached
            tokens += seq.num_new_tokens
            seats += self._seats(seq)
        return scheduled

    def _reserve_chunk(self, max_steps: int, rows: DecodeRows, in_flight: bool) -> int:
        """Blocks for a decode chunk of every running row: the chunk's steps (a power of two), or 0 when no row has a
        token left or one step does not fit; nothing reserved then.

        Vectorised over the rows (numpy, from the decode rows' arrays, which are the running sequences'), Python only
        for the rows whose shared tail is copied: a running row of length L (rows.lengths: with the chunk in flight,
        if any) has the K/V of its tokens before L - 1 written when the chunks launched are done, and the chunk
        writes the K/V of positions L - 1 onwards, one per step up to its last token."""
        blocks, size = self.blocks, self.blocks.block_size
        n = len(self.running)
        if not n:
            return 0
        assert len(rows.lengths) == n, "the decode rows are not the running sequences"
        lengths = rows.lengths
        left = rows.max_lengths - lengths
        longest = int(left.max())
        if longest < 1:
            return 0
        have = rows.table_lengths
        copies = np.zeros(n, np.int64)
        if not in_flight:  # a fork's first decode writes into its shared prompt tail (the chunk in flight wrote it)
            mid = np.flatnonzero((lengths - 1) % size != 0)  # rows whose next K/V goes into a partly filled block
            if len(mid):
                counts = blocks.ref_counts
                shared = np.fromiter((counts[b] > 1 for b in rows.last_blocks(mid).tolist()), bool, count=len(mid))
                copies[mid[shared]] = 1
        steps = 1 << (min(max_steps, longest).bit_length() - 1)  # a power of two: few CUDA graphs per batch size
        if steps < max_steps and 2 * steps - longest <= steps // 2:
            steps *= 2  # one chunk instead of several, at most a quarter of its steps past the longest row's end
        while True:
            held = lengths - 1 + np.minimum(left, steps)  # tokens whose K/V the row's blocks hold after the chunk
            needs = np.maximum(-(-held // size) - have, 0) + copies
            if int(needs.sum()) <= blocks.num_free:
                break
            if steps == 1:
                return 0
            steps //= 2
        for i in np.flatnonzero(copies).tolist():
            if blocks.ref_counts[self.running[i].block_table[-1]] > 1:  # the family's last writer keeps the shared tail
                blocks.copy_tail(self.running[i])
        grow = np.flatnonzero(needs - copies)
        counts = (needs - copies)[grow]
        appended = blocks.append_blocks([self.running[i] for i in grow.tolist()], counts.tolist())
        if copies.any():
            rows.tables_replaced()
        else:
            rows.blocks_appended(grow, counts, appended)
        return steps

    def _preempt_for_one_step(self) -> int:
        """One decode step of the running rows, preempting the newest ones until the pool holds it: 1."""
        blocks = self.blocks
        for seq in list(self.running):
            if seq.status is not Status.RUNNING:
                continue  # preempted earlier in this loop
            needed = blocks.blocks_needed(seq)
            while needed > blocks.num_free:
                victim = self.running[-1]
                self.preempt(victim)
                if victim is seq:
                    break
                needed = blocks.blocks_needed(seq)  # a preempted sibling may have unshared seq's tail
            if seq.status is Status.RUNNING and needed:
                blocks.reserve(seq)
        return 1

    def preempt(self, seq: Sequence) -> None:
        """Free a running sequence's blocks and put it back at the front of the queue (its token_ids up to date)."""
        self.running.remove(seq)
        self.num_left += 1
        self.blocks.cache_full_blocks(seq, seq.num_cached)
        self.blocks.free(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seqs: list[Sequence], reasons: list[str]) -> None:
        """Running sequences that ended ("stop" or "length"): their blocks are freed, in order."""
        for seq, reason in zip(seqs, reasons, strict=True):
            seq.status = Status.FINISHED
            seq.finish_reason = reason
            self.blocks.free(seq)
        if seqs:
            self.running = [s for s in self.running if s.status is Status.RUNNING]
            self.num_left += len(seqs)
