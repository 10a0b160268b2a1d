from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pytest

from qwick.engine import block_manager
from qwick.engine.block_manager import BlockManager, NoFreeBlocksError, PrefixCacheStats

BS = 4


def _seq(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


def _prefilled(bm: BlockManager, tokens: list[int]) -> list[int]:
    """Allocate and 'compute' a whole prompt, as the engine does after its prefill step."""
    table, _ = bm.allocate(tokens)
    bm.commit_full_blocks(table, tokens, len(tokens))
    return table


def _snapshot(bm: BlockManager) -> tuple:
    refs = [bm.ref_count(b) for b in range(bm.num_blocks)]
    return list(bm._free), list(bm._evictable), dict(bm._cached), refs, (bm.stats.queries, bm.stats.hits)


def _assert_consistent(bm: BlockManager, tables: list[list[int]]) -> None:
    held = Counter(b for table in tables for b in table)
    free, evictable = list(bm._free), list(bm._evictable)
    # Every block is in exactly one place: the free list, the evictable pool, or held by sequences.
    assert sorted(free + evictable + list(held)) == list(range(bm.num_blocks))
    assert all(bm.ref_count(b) == held[b] for b in range(bm.num_blocks))
    assert bm.num_free_blocks == len(free) + len(evictable)


def test_module_does_not_import_torch():
    code = "import sys, qwick.engine.block_manager; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rejects_empty_cache_geometry():
    with pytest.raises(ValueError, match="block_size"):
        BlockManager(num_blocks=4, block_size=0)


@pytest.mark.parametrize(
    ("num_tokens", "num_blocks"), [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3)]
)
def test_blocks_needed_rounds_up_to_whole_blocks(num_tokens, num_blocks):
    assert BlockManager(8, BS).blocks_needed(num_tokens) == num_blocks


@pytest.mark.parametrize(("num_tokens", "num_blocks"), [(1, 1), (4, 1), (5, 2), (8, 2), (9, 3)])
def test_allocate_gives_one_fresh_block_per_started_block(num_tokens, num_blocks):
    bm = BlockManager(8, BS)
    table, num_cached = bm.allocate(_seq(0, num_tokens))
    assert len(table) == len(set(table)) == num_blocks
    assert num_cached == 0
    assert bm.num_free_blocks == 8 - num_blocks


def test_sequences_get_disjoint_blocks():
    bm = BlockManager(8, BS)
    a, _ = bm.allocate(_seq(0, 9))
    b, _ = bm.allocate(_seq(100, 9))
    assert not set(a) & set(b)


def test_allocate_that_does_not_fit_raises_and_changes_nothing():
    bm = BlockManager(2, BS)
    bm.allocate(_seq(0, 4))
    before = _snapshot(bm)
    assert not bm.can_allocate(_seq(100, 5))
    with pytest.raises(NoFreeBlocksError):
        bm.allocate(_seq(100, 5))
    assert _snapshot(bm) == before


def test_append_within_the_last_block_adds_no_block():
    bm = BlockManager(8, BS)
    table, _ = bm.allocate(_seq(0, 5))
    bm.append_slots(table, 5, 3)
    assert len(table) == 2


def test_append_across_a_block_boundary_adds_blocks():
    bm = BlockManager(8, BS)
    table, _ = bm.allocate(_seq(0, 8))
    bm.append_slots(table, 8, 1)
    assert len(table) == 3
    bm.append_slots(table, 9, 8)  # positions 9..16 end in the fifth block
    assert len(table) == len(set(table)) == 5


def test_append_that_does_not_fit_raises_and_leaves_the_table():
    bm = BlockManager(2, BS)
    table, _ = bm.allocate(_seq(0, 8))
    assert not bm.can_append(table, 8, 1)
    with pytest.raises(NoFreeBlocksError):
        bm.append_slots(table, 8, 1)
    assert len(table) == 2


def test_free_returns_every_block():
    bm = BlockManager(4, BS)
    table, _ = bm.allocate(_seq(0, 9))
    bm.free(table)
    assert bm.num_free_blocks == 4
    assert bm.usage == 0.0


def test_double_free_raises_and_changes_nothing():
    bm = BlockManager(4, BS)
    table = _prefilled(bm, _seq(0, 9))
    bm.free(table)
    before = _snapshot(bm)
    with pytest.raises(ValueError, match="double free"):
        bm.free(table)
    assert _snapshot(bm) == before


def test_freeing_an_unknown_block_raises():
    with pytest.raises(ValueError):
        BlockManager(4, BS).free([7])


def test_second_sequence_shares_two_full_prefix_blocks():
    bm = BlockManager(8, BS)
    a = _prefilled(bm, _seq(0, 9))
    b, num_cached = bm.allocate([*_seq(0, 8), 99, 98])
    assert num_cached == 2 * BS
    assert b[:2] == a[:2]
    assert [bm.ref_count(x) for x in b[:2]] == [2, 2]
    assert b[2] != a[2]


def test_partial_last_block_is_never_shared():
    bm = BlockManager(8, BS)
    a = _prefilled(bm, _seq(0, 10))
    b, num_cached = bm.allocate(_seq(0, 10))
    assert num_cached == 8
    assert b[2] != a[2]
    assert bm.ref_count(a[2]) == 1


def test_fully_cached_prompt_still_leaves_its_last_block_to_compute():
    bm = BlockManager(8, BS)
    a = _prefilled(bm, _seq(0, 8))
    b, num_cached = bm.allocate(_seq(0, 8))
    assert num_cached == BS  # the block holding the last token is recomputed in a private block
    assert b[0] == a[0] and b[1] != a[1]


def test_different_prefix_misses():
    bm = BlockManager(8, BS)
    _prefilled(bm, _seq(0, 9))
    _, num_cached = bm.allocate(_seq(1, 9))
    assert num_cached == 0


def test_same_block_content_after_a_different_prefix_misses():
    bm = BlockManager(8, BS)
    _prefilled(bm, [1, 2, 3, 4, 5, 6, 7, 8, 0])
    _, at_start = bm.allocate([5, 6, 7, 8, 0])
    _, swapped = bm.allocate([5, 6, 7, 8, 1, 2, 3, 4, 0])
    assert at_start == swapped == 0


def test_committing_is_incremental_and_idempotent():
    bm = BlockManager(8, BS)
    tokens = _seq(0, 9)
    table, _ = bm.allocate(tokens)
    bm.commit_full_blocks(table, tokens, 6)  # chunked prefill: only the first block is complete
    assert bm.allocate(tokens)[1] == BS
    bm.commit_full_blocks(table, tokens, 9)
    before = _snapshot(bm)
    bm.commit_full_blocks(table, tokens, 9)
    assert _snapshot(bm) == before
    assert bm.allocate(tokens)[1] == 2 * BS


def test_freed_cached_blocks_are_reused_and_leave_the_eviction_pool():
    bm = BlockManager(4, BS)
    a = _prefilled(bm, _seq(0, 9))
    bm.free(a)
    assert bm.num_free_blocks == 4
    b, num_cached = bm.allocate(_seq(0, 9))
    assert (b[:2], num_cached) == (a[:2], 8)
    assert bm.num_free_blocks == 1
    with pytest.raises(NoFreeBlocksError):  # the revived blocks must not be evicted to make room
        bm.allocate(_seq(100, 5))


def test_can_allocate_counts_live_prefix_hits_as_free():
    bm = BlockManager(4, BS)
    _prefilled(bm, _seq(0, 9))
    tokens = [*_seq(0, 8), 99]
    assert bm.can_allocate(tokens)  # 3 blocks, but only 1 new one
    assert bm.allocate(tokens)[1] == 8


def test_can_allocate_does_not_count_an_evictable_hit_twice():
    bm = BlockManager(3, BS)
    bm.free(_prefilled(bm, _seq(0, 9)))
    tokens = _seq(0, 8) + _seq(100, 8)  # 2 cached blocks + 2 new, but reviving the 2 leaves only 1
    assert not bm.can_allocate(tokens)
    with pytest.raises(NoFreeBlocksError):
        bm.allocate(tokens)


def _two_freed_prompts() -> tuple[BlockManager, list[int], list[int]]:
    """Prompts a then b, one cached block each, freed in that order: free list [1, 3], evictable [0, 2]."""
    bm = BlockManager(4, BS)
    a, b = _seq(0, 5), _seq(100, 5)
    table_a, table_b = _prefilled(bm, a), _prefilled(bm, b)
    bm.free(table_a)
    bm.free(table_b)
    return bm, a, b


def test_eviction_takes_plain_free_blocks_first_then_the_oldest_freed():
    bm, _, _ = _two_freed_prompts()
    table, _ = bm.allocate(_seq(200, 12))
    assert table == [1, 3, 0]


def test_an_evicted_block_no_longer_hits():
    bm, a, b = _two_freed_prompts()
    bm.free(bm.allocate(_seq(200, 12))[0])  # evicts a's block
    assert bm.allocate(a)[1] == 0
    assert bm.allocate(b)[1] == BS


def test_a_prefix_is_evicted_tail_first():
    bm = BlockManager(4, BS)
    bm.free(_prefilled(bm, _seq(0, 13)))  # three cached blocks
    bm.free(bm.allocate(_seq(100, 8))[0])  # one plain free block plus one eviction
    assert bm.allocate(_seq(0, 13))[1] == 2 * BS


def test_reset_prefix_cache_forgets_unreferenced_blocks():
    bm = BlockManager(4, BS)
    bm.free(_prefilled(bm, _seq(0, 9)))
    bm.reset_prefix_cache()
    assert bm.num_free_blocks == 4
    assert bm.allocate(_seq(0, 9))[1] == 0


def test_reset_prefix_cache_keeps_blocks_of_live_sequences():
    bm = BlockManager(8, BS)
    _prefilled(bm, _seq(0, 9))
    bm.reset_prefix_cache()
    assert bm.allocate(_seq(0, 9))[1] == 8


def test_duplicate_prompts_computed_together_still_cache_their_continuations():
    bm = BlockManager(8, BS)
    prompt = _seq(0, 9)
    a, _ = bm.allocate(prompt)
    b, _ = bm.allocate(prompt)  # nothing committed yet: b computes private copies of a's blocks
    bm.commit_full_blocks(a, prompt, 9)
    bm.commit_full_blocks(b, prompt, 9)
    tokens = [*prompt, 20, 21, 22]
    bm.append_slots(b, 9, 3)
    bm.commit_full_blocks(b, tokens, 12)
    table, num_cached = bm.allocate([*tokens, 23])
    assert num_cached == 12
    assert table == [*a[:2], b[2], table[3]]


def test_a_block_after_an_uncached_block_does_not_take_the_cache_slot():
    bm = BlockManager(6, BS)
    prompt = [*_seq(0, 4), 50]
    a, _ = bm.allocate(prompt)
    b, _ = bm.allocate(prompt)
    bm.commit_full_blocks(a, prompt, 5)
    bm.commit_full_blocks(b, prompt, 5)
    bm.free(a)
    bm.free(bm.allocate(_seq(100, 16))[0])  # evicts a's block: b's first block is now an uncached copy
    decoded = [*prompt, 51, 52, 53]
    bm.commit_full_blocks(b, decoded, 8)  # unreachable from the root, so it must not be registered
    _prefilled(bm, [*decoded, 9])
    assert bm.allocate([*decoded, 9])[1] == 8


def test_stats_count_tokens_queried_and_hit():
    bm = BlockManager(8, BS)
    _prefilled(bm, _seq(0, 10))
    bm.allocate(_seq(0, 10))
    assert bm.stats == PrefixCacheStats(queries=20, hits=8)
    assert bm.stats.hit_rate == pytest.approx(0.4)


def test_failed_allocations_are_not_counted_in_stats():
    bm = BlockManager(1, BS)
    with pytest.raises(NoFreeBlocksError):
        bm.allocate(_seq(0, 9))
    assert bm.stats == PrefixCacheStats()


def test_usage_is_the_fraction_of_referenced_blocks():
    bm = BlockManager(4, BS)
    table = _prefilled(bm, _seq(0, 5))
    assert bm.usage == 0.5
    bm.free(table)  # its cached block is reclaimable, so it does not count as used
    assert bm.usage == 0.0


def test_disabled_prefix_caching_never_hits_nor_counts():
    bm = BlockManager(4, BS, enable_prefix_caching=False)
    bm.free(_prefilled(bm, _seq(0, 9)))
    _, num_cached = bm.allocate(_seq(0, 9))
    assert num_cached == 0
    assert bm.stats == PrefixCacheStats()
    assert not bm._evictable


def test_hash_collision_is_not_a_hit(monkeypatch):
    monkeypatch.setattr(block_manager, "chain_hash", lambda parent_hash, token_ids: 7)
    bm = BlockManager(8, BS)
    _prefilled(bm, [*_seq(0, 4), 9])
    assert bm.allocate([*_seq(50, 4), 9])[1] == 0
    assert bm.allocate([*_seq(0, 4), 9])[1] == BS


def test_a_hash_blind_to_the_prefix_cannot_hit_at_the_wrong_position(monkeypatch):
    monkeypatch.setattr(block_manager, "chain_hash", lambda parent_hash, token_ids: hash(token_ids))
    bm = BlockManager(8, BS)
    _prefilled(bm, [1, 2, 3, 4, 5, 6, 7, 8, 0])
    assert bm.allocate([5, 6, 7, 8, 0])[1] == 0


def test_a_recycled_block_never_matches_a_stale_parent_link(monkeypatch):
    monkeypatch.setattr(block_manager, "chain_hash", lambda parent_hash, token_ids: token_ids[0])
    bm = BlockManager(6, BS)
    x, x_collides, y = [1, 2, 3, 4], [1, 9, 9, 9], [5, 6, 7, 8]
    a, _ = bm.allocate([*x, 0])
    s, _ = bm.allocate([*x, *y, 0])  # computes its own copy of x; its y block links to a's x block
    bm.commit_full_blocks(a, [*x, 0], 5)
    bm.commit_full_blocks(s, [*x, *y, 0], 9)
    bm.free(a)
    filler, _ = bm.allocate(_seq(100, 8))
    t = _prefilled(bm, x_collides)  # evicts a's x block and reuses its memory for colliding content
    assert t == a[:1]
    bm.free(filler)
    assert bm.allocate([*x_collides, *y, 0])[1] == BS


_HASHES = {
    "blake2b": None,
    "constant": lambda parent_hash, token_ids: 7,
    "prefix_blind": lambda parent_hash, token_ids: hash(token_ids) % 5,
}


@dataclass
class _Live:
    tokens: list[int]
    table: list[int]
    computed: int


@pytest.mark.parametrize("hash_name", list(_HASHES))
@pytest.mark.parametrize("seed", range(3))
def test_random_workload_conserves_blocks_and_hits_only_exact_prefixes(seed, hash_name, monkeypatch):
    if _HASHES[hash_name]:  # colliding hashes: exactness must come from the token and parent checks
        monkeypatch.setattr(block_manager, "chain_hash", _HASHES[hash_name])
    rng = random.Random(seed)
    bm = BlockManager(24, BS)
    stems = [[rng.randrange(4) for _ in range(20)] for _ in range(3)]
    kv: dict[int, dict[int, tuple[int, ...]]] = {}  # block -> offset -> the context its KV was computed from
    live: list[_Live] = []
    preempted: list[list[int]] = []

    def admit() -> None:
        if preempted and rng.random() < 0.5:
            tokens = preempted.pop()
        else:
            tail = [rng.randrange(4) for _ in range(rng.randint(0, 5))]
            tokens = rng.choice(stems)[: rng.randint(1, 20)] + tail
        if not bm.can_allocate(tokens):
            before = _snapshot(bm)
            with pytest.raises(NoFreeBlocksError):
                bm.allocate(tokens)
            assert _snapshot(bm) == before
            return
        table, num_cached = bm.allocate(tokens)
        assert num_cached % BS == 0 and num_cached < len(tokens)
        assert len(table) == bm.blocks_needed(len(tokens))
        for p in range(num_cached):
            assert kv[table[p // BS]][p % BS] == tuple(tokens[: p + 1])
        kv.update({b: {} for b in table[num_cached // BS :]})
        live.append(_Live(tokens, table, num_cached))

    def step(seq: _Live) -> None:
        if seq.computed < len(seq.tokens):  # (chunked) prefill
            end = rng.randint(seq.computed + 1, len(seq.tokens))
        elif bm.can_append(seq.table, len(seq.tokens), 1):  # decode one token
            old = len(seq.table)
            bm.append_slots(seq.table, len(seq.tokens), 1)
            kv.update({b: {} for b in seq.table[old:]})
            seq.tokens.append(rng.randrange(4))
            end = len(seq.tokens)
        else:  # preempt; it comes back later with all its tokens
            bm.free(seq.table)
            live.remove(seq)
            preempted.append(seq.tokens)
            return
        for p in range(seq.computed, end):
            block = seq.table[p // BS]
            assert bm.ref_count(block) == 1  # the engine only ever writes into private blocks
            kv[block][p % BS] = tuple(seq.tokens[: p + 1])
        seq.computed = end
        bm.commit_full_blocks(seq.table, seq.tokens, end)

    for _ in range(400):
        op = rng.random()
        if op < 0.3 or not live:
            admit()
        elif op < 0.85:
            step(rng.choice(live))
        else:
            seq = live.pop(rng.randrange(len(live)))
            bm.free(seq.table)
        _assert_consistent(bm, [seq.table for seq in live])
    assert bm.stats.hits > 0
