"""The portable attention backend: each row's context gathered from the paged cache, then torch SDPA.

Runs on every device and dtype; compiled decode uses it (inductor fuses the gather and SDPA itself), and CUDA
where the Triton backend does not run (an fp8 KV cache, no triton, QWICK_ATTENTION_BACKEND=sdpa).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qwick.model.attention.backend import AttentionBackend, Metadata
from qwick.model.attention.metadata import AttentionMetadata
from qwick.model.kv_cache import PagedKVCache


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
         is_causal: bool = False) -> torch.Tensor:
    """q [b, heads, T, D], k/v [b, kv_heads, S, D] -> [b, heads, T, D] (grouped-query heads shared)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
                                          enable_gqa=q.shape[1] != k.shape[1])


class SdpaBackend(AttentionBackend):
    """Grouped steps only: rows in groups of similar context length, one gather + SDPA per group."""

    name = "torch SDPA over gathered KV"

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: PagedKVCache | None,
               meta: Metadata | None, layer: int, scale: float) -> torch.Tensor:
        if cache is not None and meta is not None:
            self.write(cache, layer, k, v, meta)
        return self.attend_gathered(q, k, v, cache, meta, layer, scale).transpose(1, 2)

    def attend_gathered(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: PagedKVCache | None,
                        meta: Metadata | None, layer: int, scale: float) -> torch.Tensor:
        """Keys/values already written: [B, heads, T, D] by SDPA over each group's gathered context."""
        if cache is not None and meta is not None:
            assert isinstance(meta, AttentionMetadata) and meta.context_lens is None, "SDPA needs context slots"
        if cache is None or meta is None or not meta.groups:  # fresh prompt: its own keys, causal
            return sdpa(q, k, v, None, scale, is_causal=True)
        if len(meta.groups) == 1:
            return sdpa(q, *cache.gather(layer, meta.groups[0].context_slots), meta.groups[0].mask, scale)
        out = torch.empty_like(q)
        for group in meta.groups:
            k_ctx, v_ctx = cache.gather(layer, group.context_slots)  # [b, kv_heads, S, D]
            out[group.rows] = sdpa(q[group.rows], k_ctx, v_ctx, group.mask, scale)
        return out
