"""A pool of fixed-size KV blocks with reference counts; forking shares blocks, writes copy the shared tail."""

from __future__ import annotations

from collections import deque

from r1fast.sampler.sequence import Sequence


class BlockManager:
    """Owns block ids [0, num_blocks); the KV tensors themselves live in the model runner.

    Blocks are shared by reference count: a forked child points at its parent's blocks. Before a token is written
    into a block that others share (the partially filled last prompt block), the writer gets a private copy
    (copy-on-write); the copies to perform are queued in `pending_copies` as (src, dst) block pairs.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_counts = [0] * num_blocks
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.pending_copies: list[tuple[int, int]] = []

    @property
    def num_free(self) -> int:
        return len(self.free_blocks)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _take(self) -> int:
        block = self.free_blocks.popleft()
        self.ref_counts[block] = 1
        return block

    def _release(self, block: int) -> None:
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self.free_blocks.append(block)

    def blocks_needed(self, seq: Sequence) -> int:
        """New blocks `seq` needs to hold all its tokens (a private copy of a shared tail counts as one)."""
        needed = self.blocks_for(len(seq)) - len(seq.block_table)
        tail_written = seq.num_cached % self.block_size != 0 and seq.num_cached < len(seq)
        if tail_written and self.ref_counts[seq.block_table[-1]] > 1:
            needed += 1
        return max(needed, 0)

    def can_reserve(self, seq: Sequence) -> bool:
        return self.blocks_needed(seq) <= self.num_free

    def reserve(self, seq: Sequence) -> None:
        """Give `seq` blocks for every token it holds, copying a shared tail block it is about to write."""
        if self.blocks_needed(seq) > self.num_free:
            raise RuntimeError("reserve() without enough free blocks; check can_reserve() first")
        if seq.num_cached % self.block_size != 0 and seq.num_cached < len(seq):
            tail = seq.block_table[-1]
            if self.ref_counts[tail] > 1:
                private = self._take()
                self.pending_copies.append((tail, private))
                self._release(tail)
                seq.block_table[-1] = private
        while len(seq.block_table) < self.blocks_for(len(seq)):
            seq.block_table.append(self._take())

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """child shares every block of parent (the KV of the parent's cached tokens)."""
        child.block_table = list(parent.block_table)
        for block in child.block_table:
            self.ref_counts[block] += 1
        child.num_cached = parent.num_cached

    def free(self, seq: Sequence) -> None:
        for block in reversed(seq.block_table):
            self._release(block)
        seq.block_table = []
        seq.num_cached = 0

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
