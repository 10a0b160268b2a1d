"""The CPU backend: attention read in place from the paged cache by qwick's C++ ops (kernels/cpu_ops.py).

Decodes and short prefill chunks go through `paged_decode` (each new token one query with its own block table and
context length); longer chunks through `paged_prefill` where it runs (bfloat16 model and cache, AVX512-BF16),
else by gather + SDPA. It runs a step as one flat forward (flat.py): the weights are read once a step.
"""

from __future__ import annotations

import torch

from qwick.kernels.cpu_ops import cpu_ops_available, paged_decode, paged_prefill, paged_prefill_available
from qwick.model.attention.backend import Metadata
from qwick.model.attention.flat import FlatMetadata
from qwick.model.attention.sdpa import SdpaBackend, sdpa
from qwick.model.kv_cache import PagedKVCache

# Prefill chunks of at most this many tokens also read the cache in place (each new token as one query of the
# paged op; a row's tokens run back to back on one thread, so its context is re-read from L2, not memory).
# Longer chunks gather their context once and run SDPA, whose blocked matmuls win there.
PAGED_MAX_CHUNK = 16


class CpuPagedBackend(SdpaBackend):
    """qwick's paged ops on CPU (AVX-512); SDPA over gathered context for what they do not take."""

    supports_flat_step = True
    max_paged_chunk = PAGED_MAX_CHUNK

    def __init__(self, in_place_prefill: bool) -> None:
        self.in_place_prefill = in_place_prefill
        self.name = ("qwick paged C++ ops (decode and prefill)" if in_place_prefill
                     else "qwick paged C++ op (decode, short prefill), SDPA for long prefill")

    @classmethod
    def select(cls, device: torch.device, dtype: torch.dtype, cache_dtype: torch.dtype,
               head_dim: int) -> CpuPagedBackend | None:
        """This backend where the decode op is built for `dtype` on `device`; None elsewhere. Longer prefill
        chunks read the cache in place too where the AVX512-BF16 op runs (bf16 model and cache)."""
        if not cpu_ops_available(device, dtype):
            return None
        return cls(paged_prefill_available(device, dtype, cache_dtype, head_dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: PagedKVCache | None,
               meta: Metadata | None, layer: int, scale: float) -> torch.Tensor:
        if cache is None or meta is None:
            return super().attend(q, k, v, cache, meta, layer, scale)
        self.write(cache, layer, k, v, meta)
        if isinstance(meta, FlatMetadata):
            return self._attend_flat(q, k, v, cache, meta, layer, scale).unsqueeze(0)
        if meta.context_lens is None:
            return self.attend_gathered(q, k, v, cache, meta, layer, scale).transpose(1, 2)
        assert meta.block_tables is not None
        batch, heads, seq, dim = q.shape
        # every new token is one query row: [B, heads, T, D] -> [B * T, heads, D], its row's block table
        rows = q.transpose(1, 2).reshape(batch * seq, heads, dim)
        tables = meta.block_tables if seq == 1 else meta.block_tables.repeat_interleave(seq, dim=0)
        out = paged_decode(rows, cache.keys[layer], cache.values[layer], tables, meta.context_lens.reshape(-1),
                           cache.block_size, scale)
        return out.view(batch, seq, heads, dim)

    def _attend_flat(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: PagedKVCache,
                     meta: FlatMetadata, layer: int, scale: float) -> torch.Tensor:
        """q [1, heads, N, D], k/v [1, kv_heads, N, D] of a flat forward (flat.py) -> [N, heads, D]."""
        _, heads, tokens, dim = q.shape
        rows = q.transpose(1, 2).reshape(tokens, heads, dim)  # [N, heads, D]
        out = torch.empty_like(rows)
        if meta.num_paged:
            out[: meta.num_paged] = paged_decode(rows[: meta.num_paged], cache.keys[layer], cache.values[layer],
                                                 meta.block_tables, meta.context_lens, cache.block_size, scale)
        for seg in meta.long:
            if meta.in_place_prefill:  # its context read in place from the cache (its own keys written above)
                out[seg.tokens] = paged_prefill(rows[seg.tokens], cache.keys[layer], cache.values[layer],
                                                seg.block_table, seg.start, cache.block_size, scale)
                continue
            if seg.context_slots is None:  # a fresh prompt: its own keys, causal
                part = sdpa(q[:, :, seg.tokens], k[:, :, seg.tokens], v[:, :, seg.tokens], None, scale, True)
            else:
                part = sdpa(q[:, :, seg.tokens], *cache.gather(layer, seg.context_slots), seg.mask, scale)
            out[seg.tokens] = part[0].transpose(0, 1)  # [heads, T, D] -> [T, heads, D]
        return out
