"""The CUDA backend: Triton kernels write keys/values into the paged cache and run decode attention in place;
torch SDPA runs prefill.

A step is one flat forward (flat.py): decodes and chunks of at most PAGED_MAX_CHUNK tokens attend through the
Triton paged decode kernel (kernels/triton/paged_decode.py: each token one query with its row's block table
and context length, GQA heads grouped, split-K for long contexts); longer chunks run torch SDPA one sequence at
a time (a per-sequence loop, not a block-diagonal mask over the packed axis): a fresh prompt causally over its
own keys (flash attention on a GPU), a later chunk over its context gathered from the cache with a mask.

Chosen for device cuda where triton is installed, the cache dtype is the model's (an fp8 cache falls back to
SDPA) and head_dim <= 256. `QWICK_ATTENTION_BACKEND=sdpa` forces the portable backend; `=triton` forces this one
where the model and cache fit it, and on a CPU runs it under Triton's interpreter when `TRITON_INTERPRET=1`
(tests/cuda's dry run).
"""

from __future__ import annotations

import os

import torch

from qwick.kernels.triton import interpreter_on, triton_available
from qwick.model.attention.backend import Metadata
from qwick.model.attention.flat import FlatMetadata
from qwick.model.attention.sdpa import SdpaBackend, sdpa
from qwick.model.kv_cache import PagedKVCache

BACKEND_ENV = "QWICK_ATTENTION_BACKEND"  # "triton" | "sdpa" | unset (pick by device), like VLLM_ATTENTION_BACKEND
# Chunks of at most this many tokens attend through the paged kernel (one query per token, context read in
# place); longer ones through SDPA, whose tiled matmuls win once a chunk is long.
PAGED_MAX_CHUNK = 16
_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def forced_backend() -> str | None:
    """The backend QWICK_ATTENTION_BACKEND asks for: "triton", "sdpa" or None (choose by device)."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in ("triton", "sdpa"):
        raise ValueError(f"{BACKEND_ENV} must be 'triton', 'sdpa' or 'auto', got {value!r}")
    return value


class TritonPagedBackend(SdpaBackend):
    """Triton KV write and paged decode attention; SDPA per sequence for longer prefill chunks."""

    name = "Triton paged decode + KV write, torch SDPA per sequence for prefill"
    supports_flat_step = True
    max_paged_chunk = PAGED_MAX_CHUNK

    def __init__(self) -> None:
        # imported here: importing triton costs ~1 s, and only this backend needs it
        from qwick.kernels.triton.kv_write import write_kv
        from qwick.kernels.triton.paged_decode import paged_decode

        self._write_kv, self._paged_decode = write_kv, paged_decode

    @classmethod
    def select(cls, device: torch.device, dtype: torch.dtype, cache_dtype: torch.dtype,
               head_dim: int) -> TritonPagedBackend | None:
        forced = forced_backend()
        if forced == "sdpa" or (device.type != "cuda" and forced is None):
            return None
        if not triton_available(device):
            if forced == "triton":
                raise ValueError(f"{BACKEND_ENV}=triton cannot run here: " + (
                    "triton is not installed" if device.type == "cuda"
                    else f"device {device.type} needs TRITON_INTERPRET=1 (a CPU runs Triton only interpreted)"))
            return None
        # what the kernels do not take falls back to SDPA, forced or not (as an fp8 cache does on CUDA)
        if cache_dtype != dtype or dtype not in _DTYPES or head_dim > 256:
            return None
        return cls()

    def describe(self) -> str:
        return f"attention {self.name}" + (" (Triton interpreter)" if interpreter_on() else "")

    def write(self, cache: PagedKVCache, layer: int, k: torch.Tensor, v: torch.Tensor, meta: Metadata) -> None:
        keys, values = cache.keys[layer], cache.values[layer]
        rows_k = k.transpose(1, 2).flatten(0, 1)  # [B, kv_heads, T, D] -> [B * T, kv_heads, D] (a view at B=1)
        rows_v = v.transpose(1, 2).flatten(0, 1)
        self._write_kv(keys, values, rows_k, rows_v, meta.slot_mapping)
        if isinstance(meta, FlatMetadata) and meta.mirror_tokens is not None and meta.mirror_slots is not None:
            self._write_kv(keys, values, rows_k, rows_v, meta.mirror_slots, meta.mirror_tokens)

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
        rows = q.transpose(1, 2).reshape(batch * seq, heads, dim)  # every new token one query row
        tables = meta.block_tables if seq == 1 else meta.block_tables.repeat_interleave(seq, dim=0)
        out = self._paged_decode(rows, cache.keys[layer], cache.values[layer], tables, meta.context_lens.reshape(-1),
                                 cache.block_size, scale)
        return out.view(batch, seq, heads, dim)

    def _attend_flat(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: PagedKVCache,
                     meta: FlatMetadata, layer: int, scale: float) -> torch.Tensor:
        """q [1, heads, N, D], k/v [1, kv_heads, N, D] of a flat forward -> [N, heads, D]."""
        _, heads, tokens, dim = q.shape
        rows = q[0].transpose(0, 1)  # [N, heads, D], a strided view: the kernel reads it in place
        out = torch.empty(tokens, heads, dim, dtype=q.dtype, device=q.device)
        if meta.num_paged:
            self._paged_decode(rows[: meta.num_paged], cache.keys[layer], cache.values[layer], meta.block_tables,
                               meta.context_lens, cache.block_size, scale, out=out[: meta.num_paged])
        for seg in meta.long:
            if seg.context_slots is None:  # a fresh prompt: its own keys, causal
                part = sdpa(q[:, :, seg.tokens], k[:, :, seg.tokens], v[:, :, seg.tokens], None, scale, True)
            else:
                part = sdpa(q[:, :, seg.tokens], *cache.gather(layer, seg.context_slots), seg.mask, scale)
            out[seg.tokens] = part[0].transpose(0, 1)  # [heads, T, D] -> [T, heads, D]
        return out
