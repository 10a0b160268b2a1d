"""Paged KV cache bookkeeping: which physical blocks each sequence owns, and which full blocks are
cached for reuse by later requests with the same prefix (automatic prefix caching). Plain Python.

Beyond vLLM's full-block caching, a prompt's computed tail (its last, partial block) is kept too: a later
prompt that follows the same full blocks and starts its next block with some of the same tokens copies that
block and skips those tokens (SGLang's radix cache reuses at token granularity the same way). Gates need it: a
request is an instruction, whose last ~8 tokens sit in a partial block, then a short text.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice

_ROOT_HASH = 0  # the "parent hash" of a sequence's first block
TAILS_SCANNED = 4  # computed tails compared per prefix, most recent first: bounds the cost of an allocation


def chain_hash(parent_hash: int, token_ids: tuple[int, ...]) -> int:
    """128-bit hash of a full block and, through `parent_hash`, of everything before it.

    blake2b over fixed-width little-endian ints, so it is the same on every run and machine."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(parent_hash.to_bytes(16, "little"))
    digest.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return int.from_bytes(digest.digest(), "little")


def root_hash(salt: int) -> int:
    """The parent hash of a first block. A nonzero salt (a LoRA adapter id) starts its own chain: the same
    tokens computed under another adapter have other keys/values, so they must never match (-1 is no token)."""
    return chain_hash(_ROOT_HASH, (-1, salt)) if salt else _ROOT_HASH


class NoFreeBlocksError(RuntimeError):
    """Not enough KV cache blocks; the scheduler should wait or preempt. Nothing was allocated."""


@dataclass
class PrefixCacheStats:
    """Counted in prompt tokens, like vLLM's prefix_cache_queries / prefix_cache_hits."""

    queries: int = 0
    hits: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


@dataclass(eq=False, slots=True)
class _Block:
    # Replaced by a fresh object whenever the block's memory is recycled, so object identity
    # stands for "this exact KV content" and stale `parent` links can never match again.
    ref_count: int = 0
    hash: int | None = None  # chain hash, set once the block is full and its KV computed
    token_ids: tuple[int, ...] = ()
    salt: int = 0  # the chain's salt (LoRA adapter id, 0 = base model)
    parent: _Block | None = None  # block holding the KV just before this one (None: first block)
    tail: tuple[int, ...] = ()  # a prompt's computed tail held in this block's first slots (reusable by a copy)
    tail_key: int | None = None  # the chain hash the tail follows (its entry in BlockManager._tails)


class BlockManager:
    """Allocates KV blocks to sequences and shares full, computed blocks between equal prefixes.

    Free memory is two pools: `_free` (holds nothing reusable) and `_evictable` (unreferenced but
    cached, or holding a registered tail; least recently freed first). A block is in exactly one pool or
    referenced by a sequence. `copy_block(src, dst)` copies one block's KV: with it, allocations reuse
    computed tails (without it, e.g. in unit tests of the full-block cache, they do not)."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True,
                 copy_block: Callable[[int, int], None] | None = None) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"num_blocks and block_size must be >= 1, got num_blocks={num_blocks}, "
                f"block_size={block_size}; give the KV cache more memory or a smaller block size"
            )
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.stats = PrefixCacheStats()
        self._blocks = [_Block() for _ in range(num_blocks)]
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._cached: dict[int, int] = {}  # chain hash -> block id
        self._tails: dict[int, OrderedDict[int, None]] = {}  # chain hash -> blocks holding a tail after it
        self._copy_block = copy_block

    @property
    def num_free_blocks(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by live sequences (cached-but-unreferenced counts as free)."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._blocks[block_id].ref_count

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, token_ids: Sequence[int], reuse_limit: int | None = None, salt: int = 0) -> bool:
        hits, (tail_block, _) = self._match(token_ids, reuse_limit, salt)
        return self._fits(hits, self.blocks_needed(len(token_ids)), tail_block)

    def allocate(self, token_ids: Sequence[int], reuse_limit: int | None = None,
                 salt: int = 0) -> tuple[list[int], int]:
        """Block table for a new (or resumed-after-preemption) sequence whose known tokens are
        `token_ids`, and how many leading tokens already have their KV in the cache.

        Cached full blocks are shared, up to `len(token_ids) - 1` tokens: the engine must run the last token
        to get logits, and it may only write into private blocks, so a cached block holding the last token
        is not shared — a private block is allocated in its place and recomputed. After the shared blocks,
        a registered tail (`commit_tail`) that starts the next block with the same tokens is copied into
        the sequence's own block (with `copy_block`): the count then also covers those tokens.
        `reuse_limit` caps the cached count further (a scoring sequence reads logits from that position on,
        so it must compute it). Counts stats (queries += len(token_ids), hits += cached count) only when
        prefix caching is on and the allocation succeeds.
        Raises NoFreeBlocksError, allocating nothing, if the sequence does not fit."""
        hits, (tail_block, tail_len) = self._match(token_ids, reuse_limit, salt)
        num_blocks = self.blocks_needed(len(token_ids))
        if not self._fits(hits, num_blocks, tail_block):
            raise NoFreeBlocksError(
                f"a {len(token_ids)}-token sequence needs {num_blocks - len(hits)} new KV blocks, "
                f"{self.num_free_blocks} are free"
            )
        for block_id in [*hits, *([tail_block] if tail_len else [])]:  # before taking fresh blocks: not evicted
            self._acquire(block_id)
        table = hits + [self._take_fresh() for _ in range(num_blocks - len(hits))]
        if tail_len:  # the tail's block copied into this sequence's own block, then let go
            assert self._copy_block is not None
            self._copy_block(tail_block, table[len(hits)])
            self.free([tail_block])
        num_cached = len(hits) * self.block_size + tail_len
        if self.enable_prefix_caching:
            self.stats.queries += len(token_ids)
            self.stats.hits += num_cached
        return table, num_cached

    def can_append(self, table: list[int], num_tokens_before: int, num_new: int) -> bool:
        return self.blocks_needed(num_tokens_before + num_new) - len(table) <= self.num_free_blocks

    def append_slots(self, table: list[int], num_tokens_before: int, num_new: int) -> None:
        """Grow `table` in place so positions [num_tokens_before, num_tokens_before + num_new) have
        blocks. Raises NoFreeBlocksError, leaving the table unchanged, if blocks run out."""
        assert len(table) >= self.blocks_needed(num_tokens_before), "table does not cover its tokens"
        if not self.can_append(table, num_tokens_before, num_new):
            raise NoFreeBlocksError(
                f"appending {num_new} tokens needs more than {self.num_free_blocks} free KV blocks"
            )
        grow = self.blocks_needed(num_tokens_before + num_new) - len(table)
        table.extend(self._take_fresh() for _ in range(grow))

    def commit_full_blocks(self, table: list[int], token_ids: Sequence[int], num_computed: int,
                           salt: int = 0) -> None:
        """After the engine wrote KV for the first `num_computed` tokens of `token_ids`, register every
        block that is now full and computed in the prefix cache so later requests can reuse it.
        `salt` is the one the sequence was allocated with (its LoRA adapter id; see `root_hash`).
        Idempotent; a no-op when prefix caching is off."""
        if not self.enable_prefix_caching:
            return
        size = self.block_size
        num_full = num_computed // size
        assert num_computed <= len(token_ids) and num_full <= len(table), "commit beyond the sequence"
        start = num_full  # committed blocks are a prefix of the table: scan back to its end
        while start > 0 and self._blocks[table[start - 1]].hash is None:
            start -= 1
        for i in range(start, num_full):
            block = self._blocks[table[i]]
            prev = self._blocks[table[i - 1]] if i else None
            block.parent = (self._cached_twin(prev) or prev) if prev else None
            block.token_ids = tuple(token_ids[i * size : (i + 1) * size])
            block.salt = salt
            block.hash = chain_hash(prev.hash if prev else root_hash(salt), block.token_ids)
            # First writer wins a hash; a block whose parent is not cached could never be reached.
            if block.hash not in self._cached and (block.parent is None or self._is_cached(block.parent)):
                self._cached[block.hash] = table[i]

    def commit_tail(self, table: list[int], token_ids: Sequence[int], num_computed: int, salt: int = 0) -> None:
        """After a prompt's prefill computed its first `num_computed` tokens, register the computed part of
        its last, partial block as a tail later prompts may copy (once per block: its first slots never
        change while the block lives). Needs the full blocks before it committed and cached; a no-op when
        prefix caching is off, or when nothing can copy blocks."""
        full, partial = divmod(num_computed, self.block_size)
        if not self.enable_prefix_caching or self._copy_block is None or not partial:
            return
        block = self._blocks[table[full]]
        prev = self._blocks[table[full - 1]] if full else None
        parent = self._cached_twin(prev) if prev else None
        if block.tail or (prev is not None and parent is None):  # registered already, or unreachable
            return
        block.tail, block.salt, block.parent = tuple(token_ids[full * self.block_size : num_computed]), salt, parent
        block.tail_key = parent.hash if parent is not None else root_hash(salt)
        self._tails.setdefault(block.tail_key, OrderedDict())[table[full]] = None

    def fork(self, table: list[int], num_tokens: int) -> tuple[list[int], tuple[int, int] | None]:
        """A new table for a sequence that starts with the first `num_tokens` tokens of `table`'s: full
        blocks are shared (referenced again); a partial last block gets a fresh block, returned as
        (source, copy) for the caller to copy its KV into (copy-on-write). Raises NoFreeBlocksError,
        changing nothing, when no block is free for the copy."""
        full, partial = divmod(num_tokens, self.block_size)
        assert len(table) >= full + (1 if partial else 0), "fork beyond the table"
        if partial and not self.num_free_blocks:
            raise NoFreeBlocksError("forking a sequence needs one free KV block for its partial last block")
        for block_id in table[:full]:
            self._acquire(block_id)
        if not partial:
            return table[:full], None
        fresh = self._take_fresh()
        return [*table[:full], fresh], (table[full], fresh)

    def free(self, table: Sequence[int]) -> None:
        """Drop one sequence's references, tail first so a prefix's last blocks are evicted first.
        A block left unreferenced stays cached (evictable) if it is in the prefix cache, else it
        returns to the free list. Raises ValueError, changing nothing, on an unknown or
        unreferenced block (a double free). The caller's table is left as it was."""
        for block_id, count in Counter(table).items():
            if not 0 <= block_id < self.num_blocks or self._blocks[block_id].ref_count < count:
                raise ValueError(
                    f"cannot free KV block {block_id}: it is not held by this sequence (double free?)"
                )
        for block_id in reversed(table):
            block = self._blocks[block_id]
            block.ref_count -= 1
            if block.ref_count:
                continue
            if self._is_cached(block) or block.tail:
                self._evictable[block_id] = None
            else:
                self._recycle(block_id)

    def trim(self, table: list[int], num_tokens: int) -> None:
        """Shrink `table` in place to the blocks that hold its first `num_tokens` tokens, freeing the rest (the
        slots of rejected speculative drafts; never committed to the prefix cache, which holds only full
        blocks of committed tokens)."""
        keep = max(self.blocks_needed(num_tokens), 0)
        if len(table) > keep:
            self.free(table[keep:])
            del table[keep:]

    def reset_prefix_cache(self) -> None:
        """Forget every unreferenced cached block. Blocks still held by live sequences stay cached, so
        to drop all KV (e.g. after reloading weights) call this when no sequence is running."""
        for block_id in self._evictable:
            self._forget(block_id)
            self._recycle(block_id)
        self._evictable.clear()

    def _match(self, token_ids: Sequence[int], reuse_limit: int | None = None,
               salt: int = 0) -> tuple[list[int], tuple[int, int]]:
        """Cached blocks holding the longest reusable full-block prefix of `token_ids` (within reuse_limit),
        and the registered tail that reuses most of the next block's tokens: (its block, how many; 0: none)."""
        if not self.enable_prefix_caching:
            return [], (-1, 0)
        size, hits = self.block_size, []
        parent_hash, parent = root_hash(salt), None
        usable = len(token_ids) - 1 if reuse_limit is None else min(len(token_ids) - 1, reuse_limit)
        for i in range(max(usable, 0) // size):  # never the block with the last token
            tokens = tuple(token_ids[i * size : (i + 1) * size])
            block_id = self._cached.get(chain_hash(parent_hash, tokens))
            if block_id is None:
                break
            block = self._blocks[block_id]
            # Equal tokens and the very block we matched before: exact even if the hash collides.
            if block.parent is not parent or block.token_ids != tokens or block.salt != salt:
                break
            hits.append(block_id)
            parent_hash, parent = block.hash, block
        start = len(hits) * size
        wanted = tuple(token_ids[start : min(usable, start + size - 1)])
        best = (-1, 0)
        if not wanted or self._copy_block is None:
            return hits, best
        for block_id in islice(reversed(self._tails.get(parent_hash, {})), TAILS_SCANNED):
            block = self._blocks[block_id]
            if block.parent is not parent or block.salt != salt:  # a colliding hash, never the same chain
                continue
            same = next((j for j, (a, b) in enumerate(zip(block.tail, wanted, strict=False)) if a != b),
                        min(len(block.tail), len(wanted)))
            if same > best[1]:
                best = (block_id, same)
        return hits, best

    def _fits(self, hits: list[int], num_needed: int, tail_block: int = -1) -> bool:
        # An unreferenced hit (or tail held while it is copied) leaves the evictable pool, so it cannot also
        # serve as a fresh block.
        held = [*hits, *([tail_block] if tail_block >= 0 else [])]
        revived = sum(1 for block_id in held if self._blocks[block_id].ref_count == 0)
        return num_needed - len(hits) <= self.num_free_blocks - revived

    def _is_cached(self, block: _Block) -> bool:
        block_id = self._cached.get(block.hash) if block.hash is not None else None
        return block_id is not None and self._blocks[block_id] is block

    def _cached_twin(self, block: _Block) -> _Block | None:
        """The cached block holding exactly the same KV as `block` (maybe itself), if any."""
        block_id = self._cached.get(block.hash) if block.hash is not None else None
        twin = self._blocks[block_id] if block_id is not None else None
        if (twin is not None and twin.parent is block.parent and twin.token_ids == block.token_ids
                and twin.salt == block.salt):
            return twin
        return None

    def _acquire(self, block_id: int) -> None:
        block = self._blocks[block_id]
        if block.ref_count == 0:
            del self._evictable[block_id]
        block.ref_count += 1

    def _take_fresh(self) -> int:
        if self._free:
            block_id = self._free.popleft()
        else:
            block_id, _ = self._evictable.popitem(last=False)  # least recently freed
            self._forget(block_id)
        self._blocks[block_id] = _Block(ref_count=1)
        return block_id

    def _forget(self, block_id: int) -> None:
        """Drop an evicted block from the prefix cache and the tails (its memory is about to be reused)."""
        block = self._blocks[block_id]
        if self._is_cached(block):
            del self._cached[block.hash]  # type: ignore[arg-type]
        if block.tail_key is not None:
            tails = self._tails[block.tail_key]
            del tails[block_id]
            if not tails:
                del self._tails[block.tail_key]

    def _recycle(self, block_id: int) -> None:
        self._blocks[block_id] = _Block()
        self._free.append(block_id)
