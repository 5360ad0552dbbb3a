"""The KV block pool: reference counts, forks sharing blocks, copy-on-write of a shared tail."""

from r1fast.sampler.block_manager import BlockManager
from r1fast.sampler.sampling import SamplingParams
from r1fast.sampler.sequence import Sequence


def seq(tokens: int, seq_id: int = 0) -> Sequence:
    return Sequence(seq_id, 0, list(range(tokens)), tokens, SamplingParams(), None)


def test_fork_shares_blocks_and_copy_on_write_privatises_the_tail():
    bm = BlockManager(num_blocks=10, block_size=4)
    parent = seq(6)
    bm.reserve(parent)
    parent.num_cached = 6
    assert len(parent.block_table) == 2 and bm.num_free == 8
    children = [seq(6, i) for i in range(1, 3)]
    for child in children:
        bm.fork(parent, child)
    assert bm.ref_counts[parent.block_table[0]] == 3 and bm.num_free == 8
    family = [parent, *children]
    for s in family:  # each appends a token into the shared, partially filled tail block
        s.token_ids.append(99)
        bm.reserve(s)
    full = {s.block_table[0] for s in family}
    tails = {s.block_table[1] for s in family}
    assert len(full) == 1 and len(tails) == 3  # the full block still shared; every tail private
    assert len(bm.pending_copies) == 2  # two copies; the last writer kept the original
    assert all(src == parent.block_table[1] or src in tails for src, _ in bm.pending_copies)
    assert bm.num_free == 6
    for s in family:
        bm.free(s)
    assert bm.num_free == 10 and set(bm.ref_counts) == {0}


def test_blocks_needed_counts_new_blocks_and_a_shared_tail():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = seq(4)
    assert bm.blocks_needed(a) == 1
    bm.reserve(a)
    a.num_cached = 4
    a.token_ids.append(1)
    assert bm.blocks_needed(a) == 1  # position 4 opens a new block
    assert bm.slot(a, 3) == a.block_table[0] * 4 + 3
