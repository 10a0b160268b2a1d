"""Which CPU kernel the quantized layers run: qwick's AVX-512 VNNI ops (csrc/woq_int8.cpp, woq_int4.cpp) or torch's.

Measured on this project's 2-vCPU AMX Xeon (torch 2.13, weights streamed from DRAM, 2026-11-23, machine shared
with other jobs, so ratios within one run only), [151936 x 1024], batch 1:
    one thread:   int8  torch `_weight_int8pack_mm` 6.1 GB/s, qwick 11.4 GB/s;  int4 g128  torch 7.0, qwick 9.1
    two threads:  int8  torch 11.2 GB/s, qwick 20.8-24.9 GB/s;                   int4 g128  torch 20.5, qwick 23
    (bf16 `torch.mv`, same shape: 13.9 GB/s on one thread, 26-29 on two: torch's int8 kernel is compute-bound)
So on CPUs with AVX-512 BW + VNNI qwick builds its own ops once (torch.utils.cpp_extension, ~20 s, cached in
~/.cache/torch_extensions) and uses them; elsewhere, or when no C++ compiler is found, torch's kernels.
`QWICK_KERNELS=torch` (or the older `QWICK_CPU_KERNELS=torch`) forces torch's kernels (benchmarks compare the
two).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from qwick.kernels.build import build_cpu_ops, cpu_has_flags, native_kernels_enabled

KERNELS = ("auto", "qwick", "torch")
_REQUIRED_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "f16c", "fma")
_CFLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mf16c", "-mfma"]
_SOURCES = [Path(__file__).parent / "csrc" / name for name in ("woq_int8.cpp", "woq_int4.cpp")]


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """"qwick" or "torch" for quantized layers on `device` (non-CPU devices always get "torch")."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if device.type != "cpu":
        return "torch"
    if kernel == "auto":
        kernel = "qwick" if native_kernels_enabled("woq") else "torch"
        return kernel if kernel == "torch" or qwick_kernels_available() else "torch"
    if kernel == "qwick" and not qwick_kernels_available():
        raise RuntimeError("qwick's CPU kernels are unavailable here (they need AVX-512 BW + VNNI and a C++ "
                           "compiler; see the log): use kernel='auto' or 'torch'")
    return kernel


def cpu_supports_qwick_kernels() -> bool:
    return cpu_has_flags(_REQUIRED_FLAGS)


@functools.cache  # the ops land in torch's process-wide registry: build and load them once per process
def qwick_kernels_available() -> bool:
    if not cpu_supports_qwick_kernels() or not build_cpu_ops("qwick_woq_avx512", _SOURCES, _CFLAGS):
        return False
    _register_fakes()
    return True


def _register_fakes() -> None:
    """Shape-only versions of the ops, so torch.compile can trace through them."""

    @torch.library.register_fake("qwick::int8_linear")
    def _int8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                     out_dtype: torch.dtype | None = None) -> torch.Tensor:
        return x.new_empty((x.shape[0], scale.shape[0]), dtype=out_dtype or x.dtype)

    @torch.library.register_fake("qwick::int4_linear")
    def _int4_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor,
                     group_size: int, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        return x.new_empty((x.shape[0], scale.shape[0]), dtype=out_dtype or x.dtype)
