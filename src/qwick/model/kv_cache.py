"""A slot KV cache: one contiguous row of positions per sequence, like llama.cpp's slots.

The model writes keys/values at their absolute positions and reads back [0, kv_len); the attention mask
(`AttentionMetadata`) hides stale entries beyond each row's own position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Where a forward pass's tokens sit in the cache and what each of them may attend to."""

    positions: torch.Tensor  # [B, T] absolute positions of the new tokens
    slots: torch.Tensor | None  # [B] cache rows, or None when rows are slot_start .. slot_start + B - 1
    slot_start: int
    kv_len: int  # keys attended over: cache positions [0, kv_len)
    mask: torch.Tensor | None  # [B, 1, T, kv_len] bool (True = attend), None when is_causal or all visible
    is_causal: bool
    first_position: int  # positions[0, 0], kept as a Python int so layers never sync with the device

    @classmethod
    def build(cls, positions: torch.Tensor, slots: list[int]) -> AttentionMetadata:
        batch, new_tokens = positions.shape
        kv_len = int(positions.max()) + 1
        contiguous = slots == list(range(slots[0], slots[0] + batch))
        slot_tensor = None if contiguous else torch.tensor(slots, dtype=torch.long, device=positions.device)
        first = positions[:, 0]
        last = positions[:, -1]
        is_causal = new_tokens == kv_len and bool((first == 0).all())
        all_visible = new_tokens == 1 and bool((last == kv_len - 1).all())
        mask = None
        if not (is_causal or all_visible):
            cols = torch.arange(kv_len, device=positions.device)
            mask = (cols[None, None, :] <= positions[:, :, None]).unsqueeze(1)
        return cls(positions, slot_tensor, slots[0], kv_len, mask, is_causal, int(first[0]))


class SlotKVCache:
    """Per layer: keys and values [num_slots, kv_heads, max_len, head_dim]."""

    def __init__(self, num_layers: int, num_slots: int, kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        shape = (num_slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @property
    def num_slots(self) -> int:
        return self.keys[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def ensure(self, num_slots: int, max_len: int) -> None:
        """Grow (never shrink) to at least num_slots rows of max_len positions, keeping the contents."""
        if num_slots <= self.num_slots and max_len <= self.max_len:
            return
        slots, length = max(num_slots, self.num_slots), max(max_len, self.max_len)
        for tensors in (self.keys, self.values):
            for i, old in enumerate(tensors):
                new = old.new_zeros((slots, old.shape[1], length, old.shape[3]))
                new[: old.shape[0], :, : old.shape[2]] = old
                tensors[i] = new

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, kv_heads, T, D] at their positions; return the rows' keys/values [B, kv_heads, kv_len, D]."""
        keys, values = self.keys[layer], self.values[layer]
        batch, _, new_tokens, _ = k.shape
        if meta.slots is None and batch == 1:
            start = meta.first_position
            keys[meta.slot_start, :, start : start + new_tokens] = k[0]
            values[meta.slot_start, :, start : start + new_tokens] = v[0]
        else:
            rows = self._rows(meta, batch)[:, None]
            keys[rows, :, meta.positions] = k.transpose(1, 2)
            values[rows, :, meta.positions] = v.transpose(1, 2)
        if meta.slots is None:
            rows_slice = slice(meta.slot_start, meta.slot_start + batch)
            return keys[rows_slice, :, : meta.kv_len], values[rows_slice, :, : meta.kv_len]
        return keys[meta.slots, :, : meta.kv_len], values[meta.slots, :, : meta.kv_len]

    def copy_slot(self, src: int, dst: int, length: int) -> None:
        """Duplicate the first `length` positions of a row (n > 1 samples share one prefill)."""
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[dst, :, :length] = keys[src, :, :length]
            values[dst, :, :length] = values[src, :, :length]

    @staticmethod
    def _rows(meta: AttentionMetadata, batch: int) -> torch.Tensor:
        if meta.slots is not None:
            return meta.slots
        return torch.arange(meta.slot_start, meta.slot_start + batch, device=meta.positions.device)
