"""Continuous batching: which sequences run the next forward; preemption by recompute when blocks run out."""

from __future__ import annotations

from collections import deque

from r1fast.sampler.block_manager import BlockManager
from r1fast.sampler.sequence import Sequence, Status


class Scheduler:
    """Waiting sequences are prefilled first (oldest first); otherwise every running sequence decodes `num_steps`
    tokens (a power of two up to the caller's max_steps: none past any sequence's last token, and the K/V blocks of
    every step reserved up front, fewer steps when the pool cannot hold them).

    When a running sequence needs a block and none is free, the newest running sequence is preempted: its blocks
    are freed and it goes back to the front of the queue, to be recomputed from its tokens. A sequence that does
    not fit into the whole pool raises ValueError instead of waiting forever.
    """

    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int | None = None) -> None:  # fmt: skip
        self.blocks = block_manager
        self.max_model_len = max_model_len
        self.decoding = False  # what the last schedule() returned: decode rows (True) or sequences to prefill
        self.num_steps = 1  # decode steps the last schedule() reserved blocks for
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

    def tokens_left(self, seq: Sequence) -> int:
        """Tokens seq may still generate (max_tokens, max_model_len)."""
        left = seq.params.max_tokens - (len(seq.token_ids) - seq.num_prompt_tokens)
        return left if self.max_model_len is None else min(left, self.max_model_len - len(seq.token_ids))

    def schedule(self, max_steps: int = 1) -> list[Sequence]:
        """The sequences of the next forward: waiting ones to prefill (they join `running`), else all running, with
        blocks for num_steps decode steps.

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
        self.decoding = not scheduled
        if scheduled:
            self.running.extend(scheduled)
            return scheduled

        # Decode: usually no block is needed and none fills up, so those calls are skipped (host time per step).
        blocks, size = self.blocks, self.blocks.block_size
        steps = min([max_steps, *(self.tokens_left(s) for s in self.running)])
        steps = 1 << (max(steps, 1).bit_length() - 1)  # a power of two: few CUDA graphs per batch size
        needs = [blocks.blocks_needed(s, steps - 1) for s in self.running]
        while steps > 1 and sum(needs) > blocks.num_free:
            steps //= 2
            needs = [blocks.blocks_needed(s, steps - 1) for s in self.running]
        self.num_steps, lookahead = steps, steps - 1
        fits = sum(needs) <= blocks.num_free  # then nobody is preempted and `needs` bounds each row's need
        for seq, need in zip(list(self.running), needs, strict=True):
            if seq.status is not Status.RUNNING:
                continue  # preempted earlier in this loop
            needed = need if fits else blocks.blocks_needed(seq, lookahead)
            while needed > blocks.num_free:
                victim = self.running[-1]
                self.preempt(victim)
                if victim is seq:
                    break
                needed = blocks.blocks_needed(seq, lookahead)  # a preempted sibling may have unshared seq's tail
            if seq.status is Status.RUNNING:
                if needed:
                    blocks.reserve(seq, lookahead)
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
