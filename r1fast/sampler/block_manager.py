"""A pool of fixed-size KV blocks with reference counts; forking shares blocks, writes copy the shared tail.

Prefix caching: every full block is named by a hash of its tokens and of all the tokens before it (a chain of
128-bit BLAKE2b digests). A sequence that starts (or restarts after a preemption) first points its block table at
the cached blocks of its longest cached prefix of full blocks, and only the rest of its tokens is computed. A freed
block keeps its hash until the pool hands it out again (least recently freed first), so a prefix survives while
nobody uses it. The cache is only valid for fixed weights: the sampler starts a fresh BlockManager per generate().
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable

from r1fast.sampler.sequence import Sequence


def block_hash(previous: bytes, tokens: list[int]) -> bytes:
    """The name of a full block: a digest of the previous block's name and this block's token ids."""
    return hashlib.blake2b(previous + array("q", tokens).tobytes(), digest_size=16).digest()


class BlockManager:
    """Owns block ids [0, num_blocks); the KV tensors themselves live in the model runner.

    Blocks are shared by reference count: a forked child points at its parent's blocks. Before a token is written
    into a block that others share (the partially filled last prompt block), the writer gets a private copy
    (copy-on-write); the copies to perform are queued in `pending_copies` as (src, dst) block pairs.
    Free blocks (reference count 0) are kept least recently freed first.
    """

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.ref_counts = [0] * num_blocks
        self.free_blocks: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.pending_copies: list[tuple[int, int]] = []
        self.hash_of: list[bytes | None] = [None] * num_blocks
        self.block_of: dict[bytes, int] = {}

    @property
    def num_free(self) -> int:
        return len(self.free_blocks)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _take(self, count: int) -> list[int]:
        """`count` free blocks (least recently freed first), each with reference count 1."""
        free, hash_of, ref_counts = self.free_blocks, self.hash_of, self.ref_counts
        blocks = [free.popitem(last=False)[0] for _ in range(count)]
        for block in blocks:
            old = hash_of[block]
            if old is not None:  # evict its prefix-cache entry: the block is about to be overwritten
                del self.block_of[old]
                hash_of[block] = None
            ref_counts[block] = 1
        return blocks

    def _share(self, block: int) -> None:
        if self.ref_counts[block] == 0:
            del self.free_blocks[block]
        self.ref_counts[block] += 1

    def _release(self, blocks: Iterable[int]) -> None:
        ref_counts, free = self.ref_counts, self.free_blocks
        for block in blocks:
            ref_counts[block] -= 1
            if ref_counts[block] == 0:
                free[block] = None

    def writes_shared_tail(self, seq: Sequence) -> bool:
        """Whether seq's next forward writes into its partially filled last block while others share it."""
        return (seq.num_cached % self.block_size != 0 and seq.num_cached < len(seq)
                and self.ref_counts[seq.block_table[-1]] > 1)  # fmt: skip

    def blocks_needed(self, seq: Sequence, lookahead: int = 0) -> int:
        """New blocks `seq` needs to hold all its tokens and `lookahead` more (the K/V a multi-step decode writes
        before the host sees its tokens); a private copy of a shared tail counts as one."""
        needed = self.blocks_for(len(seq) + lookahead) - len(seq.block_table)
        if self.writes_shared_tail(seq):
            needed += 1
        return max(needed, 0)

    def can_reserve(self, seq: Sequence, headroom: int = 0) -> bool:
        return self.blocks_needed(seq) + headroom <= self.num_free

    def reserve(self, seq: Sequence, lookahead: int = 0) -> None:
        """Give `seq` blocks for every token it holds and `lookahead` more, copying a shared tail block it is about
        to write."""
        if self.blocks_needed(seq, lookahead) > self.num_free:
            raise RuntimeError("reserve() without enough free blocks; check can_reserve() first")
        if self.writes_shared_tail(seq):
            self.copy_tail(seq)
        self.append_blocks([seq], [max(self.blocks_for(len(seq) + lookahead) - len(seq.block_table), 0)])

    def copy_tail(self, seq: Sequence) -> None:
        """Give seq a private copy of its last block, which others share (the copy is queued in pending_copies)."""
        tail = seq.block_table[-1]
        [private] = self._take(1)
        self.pending_copies.append((tail, private))
        self._release([tail])
        seq.block_table[-1] = private

    def append_blocks(self, seqs: list[Sequence], counts: list[int]) -> list[int]:
        """Append counts[i] free blocks to the table of seqs[i] (the caller made sure that there are that many).
        Returns the blocks appended, in order."""
        blocks = self._take(sum(counts))
        at = 0
        for seq, count in zip(seqs, counts, strict=True):
            seq.block_table += blocks[at : at + count]
            at += count
        return blocks

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """child shares every block of parent (the KV of the parent's cached tokens)."""
        child.block_table = list(parent.block_table)
        for block in child.block_table:
            self._share(block)
        child.num_cached = parent.num_cached
        child.block_hashes = list(parent.block_hashes)
        child.num_named_blocks = parent.num_named_blocks

    def free(self, seq: Sequence) -> None:
        # Tail first, so that (least recently freed first) a prefix's later blocks are evicted before its first.
        self._release(reversed(seq.block_table))
        seq.block_table = []
        seq.num_cached = 0
        seq.num_named_blocks = 0

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size

    # -- prefix caching ---------------------------------------------------------------------------------------

    def _hashes(self, seq: Sequence, num_blocks: int) -> list[bytes]:
        """seq.block_hashes, extended to name at least its first num_blocks blocks (tokens never change, so the
        names are memoised on the sequence)."""
        size = self.block_size
        while len(seq.block_hashes) < num_blocks:
            i = len(seq.block_hashes)
            previous = seq.block_hashes[-1] if i else b""
            seq.block_hashes.append(block_hash(previous, seq.token_ids[i * size : (i + 1) * size]))
        return seq.block_hashes

    def match_prefix(self, seq: Sequence) -> None:
        """Point a sequence that holds no blocks at the cached blocks of its longest cached prefix of full blocks.

        At least its last token is left uncached (its forward gives the next token's logits). Undo with free(seq).
        """
        if not self.prefix_caching or seq.block_table:
            return
        cacheable = (len(seq) - 1) // self.block_size
        for h in self._hashes(seq, cacheable)[:cacheable]:
            block = self.block_of.get(h)
            if block is None:
                break
            self._share(block)
            seq.block_table.append(block)
        seq.num_cached = len(seq.block_table) * self.block_size

    def cache_full_blocks(self, seq: Sequence, num_tokens: int | None = None) -> None:
        """Name seq's blocks that are full within its first num_tokens tokens (default: all), so that later
        sequences share them. Called when seq is admitted (the coming forward computes all its tokens, and a sequence
        that hits one of these blocks in the same forward reads it after it is written: every layer stores the
        batch's K/V before attending), and when it is preempted (num_tokens: its cached tokens), so that its
        recompute finds them."""
        if not self.prefix_caching:
            return
        full = (len(seq) if num_tokens is None else num_tokens) // self.block_size
        hashes = self._hashes(seq, full)
        for i in range(seq.num_named_blocks, full):
            block, h = seq.block_table[i], hashes[i]
            if self.hash_of[block] is None and h not in self.block_of:
                self.hash_of[block] = h
                self.block_of[h] = block
        seq.num_named_blocks = full
