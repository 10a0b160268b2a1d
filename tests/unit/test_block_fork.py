"""BlockManager for scoring: forks share a context's blocks; `reuse_limit` keeps the positions whose logits
a scoring sequence reads out of the prefix cache."""

from __future__ import annotations

import pytest

from qwick.engine.block_manager import BlockManager, NoFreeBlocksError


def _cached_sequence(manager: BlockManager, tokens: list[int]) -> None:
    table, _ = manager.allocate(tokens)
    manager.commit_full_blocks(table, tokens, len(tokens))
    manager.free(table)


def test_reuse_limit_caps_the_cached_prefix_at_a_block_boundary():
    manager = BlockManager(num_blocks=16, block_size=4)
    tokens = list(range(17))
    _cached_sequence(manager, tokens)
    assert manager.allocate(tokens)[1] == 16  # everything but the block holding the last token
    assert manager.allocate(tokens, reuse_limit=10)[1] == 8  # position 10 must be computed: blocks 0-1 only
    assert manager.allocate(tokens, reuse_limit=0)[1] == 0


def test_can_allocate_counts_the_blocks_a_reuse_limit_gives_up():
    manager = BlockManager(num_blocks=5, block_size=4)
    tokens = list(range(17))  # 5 blocks, 4 of them cached after the first sequence
    _cached_sequence(manager, tokens)
    assert manager.can_allocate(tokens)
    assert manager.can_allocate(tokens, reuse_limit=4)
    manager.allocate([100, 101, 102, 103, 104])  # takes 2 blocks: evicts cached ones
    assert not manager.can_allocate(tokens, reuse_limit=0)


def test_fork_shares_full_blocks_and_copies_the_partial_one():
    manager = BlockManager(num_blocks=8, block_size=4)
    parent, _ = manager.allocate(list(range(10)))  # blocks: 4 + 4 + 2
    child, copy = manager.fork(parent, 10)
    assert child[:2] == parent[:2] and child[2] not in parent
    assert copy == (parent[2], child[2])
    assert [manager.ref_count(b) for b in parent] == [2, 2, 1]
    manager.free(parent)
    manager.free(child)
    assert manager.num_free_blocks == 8


def test_fork_of_whole_blocks_copies_nothing_and_a_full_pool_changes_nothing():
    manager = BlockManager(num_blocks=3, block_size=4)
    parent, _ = manager.allocate(list(range(8)))
    assert manager.fork(parent, 8) == (parent, None)
    manager.allocate([1])  # the last free block
    with pytest.raises(NoFreeBlocksError):
        manager.fork(parent, 6)
    assert [manager.ref_count(b) for b in parent] == [2, 2]  # from the first fork only
