"""Continuous batching: which sequences run the next forward; preemption by recompute when blocks run out."""

from __future__ import annotations

from collections import deque

from r1fast.sampler.block_manager import BlockManager
from r1fast.sampler.sequence import Sequence, Status


class Scheduler:
    """Waiting sequences are prefilled first (oldest first); otherwise every running sequence decodes one token.

    When a running sequence needs a block and none is free, the newest running sequence is preempted: its blocks
    are freed and it goes back to the front of the queue, to be recomputed from its tokens. A sequence that does
    not fit into the whole pool raises ValueError instead of waiting forever.
    """

    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.blocks = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.num_prefix_hit_tokens = 0  # prompt tokens whose K/V came from the prefix cache instead of a forward

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _seats(self, seq: Sequence) -> int:
        return max(seq.fork, 1)

    def schedule(self) -> list[Sequence]:
        """The sequences of the next forward: waiting ones to prefill (they join `running`), else all running.

        A waiting sequence first takes the cached blocks of its prompt's longest cached prefix. While others run, it
        is admitted only if the pool keeps one free block per running sequence (each may need one at its next
        decode step), so that admitting it does not immediately preempt it again.
        """
        scheduled: list[Sequence] = []
        tokens = 0
        seats = sum(self._seats(s) for s in self.running)
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
        if scheduled:
            self.running.extend(scheduled)
            return scheduled

        # Decode: usually no block is needed and none fills up, so those calls are skipped (host time per step).
        blocks, size = self.blocks, self.blocks.block_size
        for seq in list(self.running):
            if seq.status is not Status.RUNNING:
                continue  # preempted earlier in this loop
            needed = blocks.blocks_needed(seq)
            while needed > blocks.num_free:
                victim = self.running[-1]
                self.preempt(victim)
                if victim is seq:
                    break
                needed = blocks.blocks_needed(seq)  # a preempted sibling may have unshared seq's tail block
            if seq.status is Status.RUNNING:
                if needed:
                    blocks.reserve(seq)
                if len(seq.token_ids) // size > seq.num_named_blocks:
                    blocks.cache_full_blocks(seq)
                scheduled.append(seq)
        return scheduled

    def preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status = Status.FINISHED
        seq.finish_reason = reason
        self.running.remove(seq)
        self.blocks.free(seq)
