"""Paged KV cache: keys/values live in fixed-size blocks; a block table maps a sequence's positions to them.

Position p of a sequence is stored at physical slot `table[p // block_size] * block_size + p % block_size`.
The model writes new tokens' keys/values at their slots, then gathers the slots of every attended position,
so sequences can share cached prefix blocks. `AttentionMetadata` is built once per forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_PADDING = 0.25  # a padded group may hold at most this much padding (fraction of its real entries)


@dataclass
class ContextGroup:
    """Rows of the batch whose keys are gathered together, padded to the group's longest context."""

    rows: slice
    context_slots: torch.Tensor  # [b, S] slots of positions 0..S-1 per row
    mask: torch.Tensor | None  # [b, 1, T, S] bool (True = attend); None when every position is visible


@dataclass
class AttentionMetadata:
    """Where a forward pass's tokens go in the cache and what each of them attends to."""

    slot_mapping: torch.Tensor  # [B * T] physical slot of each new token
    groups: list[ContextGroup]  # empty: a fresh prompt, which attends causally to its own new tokens only
    # Set instead of groups when attention reads the cache in place (kernels/cpu_ops.py):
    block_tables: torch.Tensor | None = None  # [B, W] int64 physical blocks of each row, zero-padded
    context_lens: torch.Tensor | None = None  # [B, T] int64 positions each new token attends to (its own + 1)

    @classmethod
    def build(cls, positions: torch.Tensor, block_tables: list[list[int]], block_size: int,
              num_new: list[int] | None = None, scratch_slot: int = -1, paged: bool = False) -> AttentionMetadata:
        """positions [B, T]: each row holds its consecutive positions. Rows with fewer new tokens (`num_new`)
        are padded by repeating their last position; the padding writes its keys to `scratch_slot`.
        Rows sorted by context length (longest first) gather the least padding. `paged`: describe the context
        by block tables and lengths instead, for an attention that reads the cache in place."""
        device = positions.device
        batch, new_tokens = positions.shape
        width = max(len(t) for t in block_tables)
        tables = torch.tensor([t + [0] * (width - len(t)) for t in block_tables], dtype=torch.long, device=device)
        slot_mapping = slots_of(tables, positions, block_size)
        if num_new is not None and min(num_new) < new_tokens:
            assert scratch_slot >= 0
            is_pad = torch.arange(new_tokens, device=device)[None, :] >= torch.tensor(num_new, device=device)[:, None]
            slot_mapping = slot_mapping.masked_fill(is_pad, scratch_slot)
        slot_mapping = slot_mapping.reshape(-1)
        if paged:
            return cls(slot_mapping, [], tables, positions + 1)
        if batch == 1 and int(positions[0, 0]) == 0:  # a fresh prompt attends to its own keys: plain causal
            return cls(slot_mapping, [])
        ends = (positions[:, -1] + 1).tolist()  # context length of each row
        groups = []
        for rows in length_groups(ends):
            kv_len = max(ends[rows])
            cols = torch.arange(kv_len, device=device)
            context_slots = slots_of(tables[rows], cols.expand(rows.stop - rows.start, kv_len), block_size)
            mask = None
            if new_tokens > 1 or min(ends[rows]) != kv_len:
                mask = (cols[None, None, :] <= positions[rows, :, None]).unsqueeze(1)
            groups.append(ContextGroup(rows, context_slots, mask))
        return cls(slot_mapping, groups)


def length_groups(lengths: list[int], slack: int = 0) -> list[slice]:
    """Consecutive runs of rows whose padding to the run's longest length stays within MAX_PADDING, or within
    `slack` entries in all (lengths sorted longest first give the fewest runs)."""
    groups: list[slice] = []
    start = 0
    for i in range(1, len(lengths) + 1):
        run = lengths[start : i + 1]
        padded = max(run) * len(run)
        if i == len(lengths) or (padded > sum(run) * (1 + MAX_PADDING) and padded > sum(run) + slack):
            groups.append(slice(start, i))
            start = i
    return groups


def slots_of(tables: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    # tables [B, blocks], positions [B, N] -> physical slots [B, N]
    blocks = torch.gather(tables, 1, torch.div(positions, block_size, rounding_mode="floor"))
    return blocks * block_size + positions % block_size


FP8_MAX = 448.0  # largest finite float8 e4m3fn: values beyond are clamped, not turned into NaN


class PagedKVCache:
    """Per layer: keys and values [num_blocks * block_size + 1 scratch slot, kv_heads, head_dim].

    Stored in `dtype`: the model's (`compute_dtype`), or float8 e4m3 (vLLM's kv_cache_dtype="fp8", scale 1):
    half the bytes per token of bf16, so twice the tokens per budget, at ~3 significant bits per value (decode
    attention reads half the bytes but, widening them, was no faster on the 2-vCPU box). fp8 is written
    through uint8 views (torch has no fp8 index_copy_ on CPU) and read back as `compute_dtype`."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu", compute_dtype: torch.dtype | None = None) -> None:
        self.num_blocks, self.block_size = num_blocks, block_size
        self.dtype, self.compute_dtype = dtype, compute_dtype or dtype
        self.fp8 = dtype == torch.float8_e4m3fn
        self.scratch_slot = num_blocks * block_size  # one extra slot where padding tokens write
        shape = (num_blocks * block_size + 1, kv_heads, head_dim)
        # zeros, not empty: masked-out slots are still multiplied by a 0 weight, and 0 * NaN garbage is NaN
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self._gather_k = torch.empty(0, kv_heads, head_dim, dtype=self.compute_dtype, device=device)
        self._gather_v = torch.empty(0, kv_heads, head_dim, dtype=self.compute_dtype, device=device)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def copy_block(self, src: int, dst: int) -> None:
        """Copy one block's keys and values in every layer (copy-on-write of a shared partial block)."""
        size = self.block_size
        for cache in (*self.keys, *self.values):
            raw = self._raw(cache)
            raw[dst * size : (dst + 1) * size] = raw[src * size : (src + 1) * size]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor,
              mirror_tokens: torch.Tensor | None = None, mirror_slots: torch.Tensor | None = None) -> None:
        """Store k, v [B, kv_heads, T, D] at their slots [B * T]; the tokens `mirror_tokens` [M] (indices into
        B * T) also at `mirror_slots` [M] (model/packed.py: a fork's copy of a partial block)."""
        kv_heads, head_dim = k.shape[1], k.shape[3]
        for cache, new in ((self.keys[layer], k), (self.values[layer], v)):
            flat = new.transpose(1, 2).reshape(-1, kv_heads, head_dim)  # [B * T, kv_heads, D]
            if self.fp8:
                flat = flat.clamp(-FP8_MAX, FP8_MAX).to(self.dtype)
            raw, flat = self._raw(cache), self._raw(flat)
            raw.index_copy_(0, slot_mapping, flat)
            if mirror_tokens is not None and mirror_slots is not None:
                raw.index_copy_(0, mirror_slots, flat.index_select(0, mirror_tokens))

    def _raw(self, tensor: torch.Tensor) -> torch.Tensor:
        """fp8 tensors as their bytes (the ops torch lacks for fp8 on CPU work on uint8); others as they are."""
        return tensor.view(torch.uint8) if self.fp8 else tensor

    def gather(self, layer: int, context_slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values at context_slots [b, S] -> [b, kv_heads, S, D], valid until the next gather."""
        keys, values = self.keys[layer], self.values[layer]
        batch, kv_len = context_slots.shape
        kv_heads, head_dim = keys.shape[1], keys.shape[2]
        flat = context_slots.reshape(-1)  # index_select: ~2x faster than advanced indexing on CPU
        # Gather into buffers reused by every layer: fresh 30+ MB tensors per layer come straight from mmap
        # and page-fault on every touch (measured: batch-64 decode 2x slower).
        if self._gather_k.shape[0] < flat.numel():  # grow geometrically, never shrink
            rows = max(flat.numel(), 2 * self._gather_k.shape[0])
            self._gather_k = keys.new_empty((rows, kv_heads, head_dim), dtype=self.compute_dtype)
            self._gather_v = values.new_empty((rows, kv_heads, head_dim), dtype=self.compute_dtype)
        if self.fp8:  # gather the bytes, then widen into the reused buffers
            k_ctx = self._gather_k[: flat.numel()].copy_(self._raw(keys).index_select(0, flat).view(self.dtype))
            v_ctx = self._gather_v[: flat.numel()].copy_(self._raw(values).index_select(0, flat).view(self.dtype))
        else:
            k_ctx = torch.index_select(keys, 0, flat, out=self._gather_k[: flat.numel()])
            v_ctx = torch.index_select(values, 0, flat, out=self._gather_v[: flat.numel()])
        k_ctx = k_ctx.view(batch, kv_len, kv_heads, head_dim)
        v_ctx = v_ctx.view(batch, kv_len, kv_heads, head_dim)
        return k_ctx.transpose(1, 2), v_ctx.transpose(1, 2)  # [b, kv_heads, S, D]
