"""Decode attention read straight from the paged KV cache on CPU: qwick's op (csrc/paged_attention.cpp).

The portable path (kv_cache.PagedKVCache.gather + SDPA) copies every row's context out of the cache per layer
and reads the copy again; the op reads each key and value once. It is used for decode steps (one new token per
row) on CPUs with AVX-512F once it builds (~15 s, once per machine); elsewhere, or with
`QWICK_CPU_ATTENTION=sdpa`, the portable path runs. Results equal SDPA's within float rounding (tests).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from qwick.native import build_cpu_ops, cpu_has_flags

_SOURCE = Path(__file__).parent / "csrc" / "paged_attention.cpp"
_CFLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma"]
_SUPPORTED_DTYPES = (torch.bfloat16, torch.float32)


@functools.cache  # the op lands in torch's process-wide registry: build and load it once per process
def _built() -> bool:
    if not cpu_has_flags(("avx512f", "avx512bw", "avx512vl", "fma")):
        return False
    if not build_cpu_ops("qwick_paged_attention", _SOURCE, _CFLAGS):
        return False

    @torch.library.register_fake("qwick_attn::paged_decode")
    def _fake(q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, block_tables: torch.Tensor,
              context_lens: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
        return torch.empty_like(q)

    return True


def paged_decode_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether decode steps on `device` with a cache of `dtype` run qwick's op."""
    if device.type != "cpu" or dtype not in _SUPPORTED_DTYPES:
        return False
    if os.environ.get("QWICK_CPU_ATTENTION", "auto") == "sdpa":
        return False
    return _built()


def paged_decode(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """q [B, heads, D] -> [B, heads, D]: row b attends to its positions 0..context_lens[b]-1, whose keys and
    values sit in keys/values [slots, kv_heads, D] at the slots its block table [B, W] names."""
    return torch.ops.qwick_attn.paged_decode(q, keys, values, block_tables, context_lens, block_size, scale)
