"""Picking a model's attention backend, once, when the engine is built.

Backends are tried in order; the first that runs here wins, else the portable SDPA one. A new backend (e.g.
an accelerator's paged attention) is one file with a `select` classmethod and one entry in BACKENDS.
"""

from __future__ import annotations

import torch

from qwick.model.attention.backend import AttentionBackend
from qwick.model.attention.cpu_paged import CpuPagedBackend
from qwick.model.attention.sdpa import SdpaBackend
from qwick.model.attention.triton_paged import TritonPagedBackend, forced_backend

# each: select(device, dtype, cache_dtype, head_dim) -> a backend, or None where it does not run
BACKENDS = (TritonPagedBackend, CpuPagedBackend)


def select_backend(device: torch.device, dtype: torch.dtype, cache_dtype: torch.dtype,
                   head_dim: int) -> AttentionBackend:
    """The backend for a model computing in `dtype` on `device` over a KV cache stored in `cache_dtype`
    (QWICK_ATTENTION_BACKEND=sdpa: the portable one, whatever runs here)."""
    if forced_backend() == "sdpa":
        return SdpaBackend()
    for backend in BACKENDS:
        chosen = backend.select(device, dtype, cache_dtype, head_dim)
        if chosen is not None:
            return chosen
    return SdpaBackend()
