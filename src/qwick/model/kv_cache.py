"""Paged KV cache: keys/values live in fixed-size blocks; a block table maps a sequence's positions to them.

Position p of a sequence is stored at physical slot `table[p // block_size] * block_size + p % block_size`.
The model writes new tokens' keys/values at their slots, then gathers the slots of every attended position,
so sequences can share cached prefix blocks. `AttentionMetadata` is built once per forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Where a forward pass's tokens go in the cache and what each of them attends to."""

    slot_mapping: torch.Tensor  # [B * T] physical slot of each new token
    context_slots: torch.Tensor | None  # [B, S] slots of positions 0..S-1 per row; None = only the new tokens
    mask: torch.Tensor | None  # [B, 1, T, S] bool (True = attend); None when is_causal or everything is visible
    is_causal: bool

    @classmethod
    def build(cls, positions: torch.Tensor, block_tables: list[list[int]], block_size: int,
              num_new: list[int] | None = None, scratch_slot: int = -1) -> AttentionMetadata:
        """positions [B, T]: each row holds its consecutive positions. Rows with fewer new tokens (`num_new`)
        are padded by repeating their last position; the padding writes its keys to `scratch_slot`."""
        device = positions.device
        batch, new_tokens = positions.shape
        width = max(len(t) for t in block_tables)
        tables = torch.tensor([t + [0] * (width - len(t)) for t in block_tables], dtype=torch.long, device=device)
        slot_mapping = _slots(tables, positions, block_size)
        padded = num_new is not None and min(num_new) < new_tokens
        if padded:
            assert num_new is not None and scratch_slot >= 0
            is_pad = torch.arange(new_tokens, device=device)[None, :] >= torch.tensor(num_new, device=device)[:, None]
            slot_mapping = slot_mapping.masked_fill(is_pad, scratch_slot)
        slot_mapping = slot_mapping.reshape(-1)
        if batch == 1 and int(positions[0, 0]) == 0:  # a fresh prompt attends to its own keys: plain causal
            return cls(slot_mapping, None, None, True)
        ends = positions[:, -1] + 1  # [B] context length of each row
        kv_len = int(ends.max())
        cols = torch.arange(kv_len, device=device)
        context_slots = _slots(tables, cols.expand(batch, kv_len), block_size)
        mask = None
        if new_tokens > 1 or bool((ends != kv_len).any()):
            mask = (cols[None, None, :] <= positions[:, :, None]).unsqueeze(1)
        return cls(slot_mapping, context_slots, mask, False)


def _slots(tables: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    # tables [B, blocks], positions [B, N] -> physical slots [B, N]
    blocks = torch.gather(tables, 1, torch.div(positions, block_size, rounding_mode="floor"))
    return blocks * block_size + positions % block_size


class PagedKVCache:
    """Per layer: keys and values [num_blocks * block_size + 1 scratch slot, kv_heads, head_dim]."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.num_blocks, self.block_size = num_blocks, block_size
        self.scratch_slot = num_blocks * block_size  # one extra slot where padding tokens write
        shape = (num_blocks * block_size + 1, kv_heads, head_dim)
        # zeros, not empty: masked-out slots are still multiplied by a 0 weight, and 0 * NaN garbage is NaN
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self._gather_k = torch.empty(0, kv_heads, head_dim, dtype=dtype, device=device)
        self._gather_v = torch.empty(0, kv_heads, head_dim, dtype=dtype, device=device)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, kv_heads, T, D] at their slots; return the keys/values attended [B, kv_heads, S, D]."""
        keys, values = self.keys[layer], self.values[layer]
        kv_heads, head_dim = k.shape[1], k.shape[3]
        keys.index_copy_(0, meta.slot_mapping, k.transpose(1, 2).reshape(-1, kv_heads, head_dim))
        values.index_copy_(0, meta.slot_mapping, v.transpose(1, 2).reshape(-1, kv_heads, head_dim))
        if meta.context_slots is None:
            return k, v
        batch, kv_len = meta.context_slots.shape
        flat = meta.context_slots.reshape(-1)  # index_select: ~2x faster than advanced indexing on CPU
        # Gather into buffers reused by every layer: fresh 30+ MB tensors per layer come straight from mmap
        # and page-fault on every touch (measured: batch-64 decode 2x slower).
        if self._gather_k.shape[0] < flat.numel():  # grow geometrically, never shrink
            rows = max(flat.numel(), 2 * self._gather_k.shape[0])
            self._gather_k = keys.new_empty((rows, kv_heads, head_dim))
            self._gather_v = values.new_empty((rows, kv_heads, head_dim))
        k_ctx = torch.index_select(keys, 0, flat, out=self._gather_k[: flat.numel()])
        v_ctx = torch.index_select(values, 0, flat, out=self._gather_v[: flat.numel()])
        k_ctx = k_ctx.view(batch, kv_len, kv_heads, head_dim)
        v_ctx = v_ctx.view(batch, kv_len, kv_heads, head_dim)
        return k_ctx.transpose(1, 2), v_ctx.transpose(1, 2)  # [B, kv_heads, S, D]
