"""Paged KV cache: keys/values live in fixed-size blocks; a block table maps a sequence's positions to them.

Position p of a sequence is stored at physical slot `table[p // block_size] * block_size + p % block_size`.
The model writes new tokens' keys/values at their slots, then gathers the slots of every attended position,
so sequences can share cached prefix blocks. What a forward's tokens attend to is model/attention/metadata.py.
"""

from __future__ import annotations

import torch


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
        B * T) also at `mirror_slots` [M] (model/attention/flat.py: a fork's copy of a partial block)."""
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
