"""Computed prompt tails (a prompt's partial last block) are reused by copy: later prompts that follow the
same full blocks skip the tokens they share with a registered tail, never more, never across chains."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from qwick.engine import block_manager
from qwick.engine.block_manager import TAILS_SCANNED, BlockManager, NoFreeBlocksError

BS = 4


class Copies:
    """copy_block stand-in: records (src, dst) copies."""

    def __init__(self) -> None:
        self.done: list[tuple[int, int]] = []

    def __call__(self, src: int, dst: int) -> None:
        self.done.append((src, dst))


def _prefilled(bm: BlockManager, tokens: list[int], salt: int = 0) -> list[int]:
    """Allocate, 'compute' the whole prompt and commit it, as the engine does when a prefill completes."""
    table, _ = bm.allocate(tokens, salt=salt)
    bm.commit_full_blocks(table, tokens, len(tokens), salt)
    bm.commit_tail(table, tokens, len(tokens), salt)
    return table


def test_a_later_prompt_copies_the_shared_tail_and_skips_its_tokens():
    copies = Copies()
    bm = BlockManager(16, BS, copy_block=copies)
    a = _prefilled(bm, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])  # two full blocks, tail (9, 10)
    b, num_cached = bm.allocate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50, 51])
    assert num_cached == 2 * BS + 2
    assert b[:2] == a[:2] and b[2] != a[2]  # full blocks shared, the tail's block copied into a private one
    assert copies.done == [(a[2], b[2])]
    assert bm.ref_count(a[2]) == 1 and bm.ref_count(b[2]) == 1  # the source is let go after the copy
    assert bm.stats.hits == 2 * BS + 2


def test_only_the_tokens_in_common_are_reused():
    copies = Copies()
    bm = BlockManager(16, BS, copy_block=copies)
    _prefilled(bm, [1, 2, 3, 4, 5, 6, 7])  # tail (5, 6, 7)
    _, num_cached = bm.allocate([1, 2, 3, 4, 5, 6, 99, 98])
    assert num_cached == BS + 2


def test_the_last_token_and_the_reuse_limit_are_always_computed():
    bm = BlockManager(16, BS, copy_block=Copies())
    _prefilled(bm, [1, 2, 3, 4, 5, 6, 7])
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7])[1] == BS + 2  # the same prompt: its last token runs again
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7, 8], reuse_limit=5)[1] == 5  # a scoring read at position 5


def test_a_tail_outlives_its_sequence_until_evicted():
    copies = Copies()
    bm = BlockManager(4, BS, copy_block=copies)
    a = _prefilled(bm, [1, 2, 3, 4, 5, 6])
    bm.free(a)
    assert bm.num_free_blocks == 4  # both blocks evictable: the full one cached, the other a tail
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7])[1] == BS + 2
    bm2 = BlockManager(2, BS, copy_block=copies)
    a = _prefilled(bm2, [1, 2, 3, 4, 5, 6])
    bm2.free(a)
    bm2.free(bm2.allocate([70, 71, 72, 73, 74])[0])  # needs both blocks: the tail's block is evicted
    assert bm2.allocate([1, 2, 3, 4, 5, 6, 7])[1] == 0


def test_a_tail_is_not_copied_across_chains_or_adapters():
    bm = BlockManager(16, BS, copy_block=Copies())
    _prefilled(bm, [1, 2, 3, 4, 5, 6])
    assert bm.allocate([9, 2, 3, 4, 5, 6, 7])[1] == 0  # same block tokens after another first block
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7], salt=3)[1] == 0  # the same tokens under a LoRA adapter
    _prefilled(bm, [1, 2, 3, 4, 5, 6], salt=3)
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7], salt=3)[1] == BS + 2


def test_short_prompts_share_a_tail_of_their_first_block():
    bm = BlockManager(16, BS, copy_block=Copies())
    _prefilled(bm, [1, 2, 3])
    assert bm.allocate([1, 2, 7])[1] == 2


def test_without_a_copy_or_with_caching_off_nothing_is_reused():
    plain = BlockManager(16, BS)
    _prefilled(plain, [1, 2, 3, 4, 5, 6])
    assert plain.allocate([1, 2, 3, 4, 5, 6, 7])[1] == BS
    off = BlockManager(16, BS, enable_prefix_caching=False, copy_block=Copies())
    _prefilled(off, [1, 2, 3, 4, 5, 6])
    assert off.allocate([1, 2, 3, 4, 5, 6, 7])[1] == 0


def test_the_most_recent_tails_are_scanned():
    bm = BlockManager(32, BS, copy_block=Copies())
    _prefilled(bm, [1, 2, 3, 4, 5, 6, 7])  # the best match, then newer tails that match less
    for i in range(TAILS_SCANNED):
        _prefilled(bm, [1, 2, 3, 4, 5, 60 + i])
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7, 8])[1] == BS + 1  # (5, 6, 7) is past the scan; (5, ...) is not
    _prefilled(bm, [1, 2, 3, 4, 5, 6, 7])
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7, 8])[1] == BS + 3


def test_allocation_that_does_not_fit_changes_nothing():
    bm = BlockManager(3, BS, copy_block=Copies())
    a = _prefilled(bm, [1, 2, 3, 4, 5, 6])
    bm.free(a)
    held, _ = bm.allocate([80, 81, 82])
    assert not bm.can_allocate([1, 2, 3, 4, 5, 6, 7, 8, 9])  # 3 blocks, the full and tail ones among them
    with pytest.raises(NoFreeBlocksError):
        bm.allocate([1, 2, 3, 4, 5, 6, 7, 8, 9])
    bm.free(held)
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7])[1] == BS + 2  # still there


def test_reset_forgets_unreferenced_tails():
    bm = BlockManager(8, BS, copy_block=Copies())
    bm.free(_prefilled(bm, [1, 2, 3, 4, 5, 6]))
    bm.reset_prefix_cache()
    assert bm.num_free_blocks == 8 and not bm._tails
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7])[1] == 0


@pytest.mark.parametrize("collide", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_random_workload_copies_only_computed_kv(seed, collide, monkeypatch):
    """Models every slot's KV as the context it was computed from; copies carry it along. Whatever is
    reused (shared or copied) must hold exactly the KV of the new prompt's own prefix."""
    if collide:  # every hash equal: exactness must come from the parent, token and salt checks
        monkeypatch.setattr(block_manager, "chain_hash", lambda parent, tokens: 1)
    rng = random.Random(seed)
    kv: dict[int, dict[int, tuple[int, ...]]] = {}

    def copy(src: int, dst: int) -> None:
        kv[dst] = dict(kv.get(src, {}))

    bm = BlockManager(24, BS, copy_block=copy)
    stems = [[rng.randrange(3) for _ in range(14)] for _ in range(3)]
    live: list[tuple[list[int], list[int]]] = []
    copied = 0
    for _ in range(400):
        if rng.random() < 0.6 or not live:
            tokens = rng.choice(stems)[: rng.randint(1, 14)] + [rng.randrange(3) for _ in range(rng.randint(0, 3))]
            limit = rng.choice([None, None, rng.randrange(len(tokens))])
            if not bm.can_allocate(tokens, limit):
                continue
            table, cached = bm.allocate(tokens, limit)
            assert cached < len(tokens) and (limit is None or cached <= limit)
            copied += cached % BS > 0
            for p in range(cached):
                assert kv[table[p // BS]][p % BS] == tuple(tokens[: p + 1])
            for p in range(cached, len(tokens)):  # the engine computes the rest, then commits
                assert bm.ref_count(table[p // BS]) == 1
                kv.setdefault(table[p // BS], {})[p % BS] = tuple(tokens[: p + 1])
            bm.commit_full_blocks(table, tokens, len(tokens))
            bm.commit_tail(table, tokens, len(tokens))
            live.append((tokens, table))
        else:
            _, table = live.pop(rng.randrange(len(live)))
            bm.free(table)
        held = Counter(b for _, table in live for b in table)
        assert sorted([*bm._free, *bm._evictable, *held]) == list(range(bm.num_blocks))
        for block_id in bm._free:  # recycled memory is fresh: forget its modelled KV
            kv.pop(block_id, None)
    assert copied > 10  # tails were reused, not only full blocks
