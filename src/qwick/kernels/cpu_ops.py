"""qwick's own CPU ops for the decode hot path (csrc/): attention read in place from the paged KV cache, and
RMSNorm / RMSNorm + rotary embedding as one op each.

Why: the portable attention path (kv_cache.PagedKVCache.gather + SDPA) copies every row's context out of the
cache per layer and reads the copy again; the op reads each key and value once (2-3x faster at batch 16-32).
The norms and the rotary embedding are ~25 small torch ops per layer, whose dispatch costs more than their math
at decode sizes. The ops keep the torch code's float32 math and bfloat16 roundings (parity tests hold).
They run on CPUs with AVX-512F once built (~20 s, once per machine, cached by torch.utils.cpp_extension), for
bfloat16 and float32 tensors that need no gradient; elsewhere, or with `QWICK_KERNELS=torch` (older name:
`QWICK_CPU_OPS=torch`), the torch code runs. Prefill chunks of more than a few tokens (bfloat16, CPUs with AVX512-BF16) attend through `paged_prefill`,
which reads the cache in place too and takes its dot products in AVX512-BF16 (3-4x faster than gather + SDPA).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from qwick.kernels.build import build_cpu_ops, cpu_has_flags, native_kernels_enabled

_SOURCES = [Path(__file__).parent / "csrc" / name for name in ("paged_attention.cpp", "norm_rope.cpp")]
_CFLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma"]
_SUPPORTED_DTYPES = (torch.bfloat16, torch.float32)
# ops built on AVX512-BF16 dot products: their own library, so CPUs without them keep the others
_BF16_SOURCES = [Path(__file__).parent / "csrc" / name for name in ("paged_prefill.cpp", "linear_bf16.cpp")]


@functools.cache  # the ops land in torch's process-wide registry: build and load them once per process
def _built() -> bool:
    if not cpu_has_flags(("avx512f", "avx512bw", "avx512vl", "fma")):
        return False
    if not build_cpu_ops("qwick_cpu_ops", _SOURCES, _CFLAGS):
        return False

    @torch.library.register_fake("qwick::paged_decode")
    def _paged_decode(q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                      block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int,
                      scale: float) -> torch.Tensor:
        return torch.empty_like(q)

    @torch.library.register_fake("qwick::rms_norm")
    def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.empty_like(x)

    @torch.library.register_fake("qwick::qk_norm_rope")
    def _qk_norm_rope(x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor,
                      sin: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    return True


@functools.cache
def _bf16_built() -> bool:
    if not _built() or not cpu_has_flags(("avx512_bf16",)):
        return False
    if not build_cpu_ops("qwick_cpu_bf16_ops", _BF16_SOURCES, [*_CFLAGS, "-mavx512bf16"]):
        return False

    @torch.library.register_fake("qwick::linear_bf16")
    def _linear_bf16(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x.new_empty(x.shape[0], weight.shape[0] * 16)

    @torch.library.register_fake("qwick::paged_prefill")
    def _paged_prefill(q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                       block_table: torch.Tensor, start: int, block_size: int, scale: float) -> torch.Tensor:
        return torch.empty_like(q)

    return True


def bf16_ops_available() -> bool:
    """Whether the AVX512-BF16 ops (paged_prefill, linear_bf16) run here: such a CPU, a C++ compiler, and
    qwick's native ops not turned off (QWICK_KERNELS=torch)."""
    return cpu_ops_available(torch.device("cpu"), torch.bfloat16) and _bf16_built()


def paged_prefill_available(device: torch.device, dtype: torch.dtype, cache_dtype: torch.dtype,
                            head_dim: int) -> bool:
    """Whether prefill chunks of this model and KV cache can attend through `paged_prefill`: bfloat16 compute
    and cache (not fp8), head_dim a multiple of 32, a CPU with AVX512-BF16."""
    return (device.type == "cpu" and dtype == torch.bfloat16 and cache_dtype == torch.bfloat16
            and head_dim % 32 == 0 and bf16_ops_available())


def cpu_ops_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether tensors of `dtype` on `device` can run qwick's CPU ops."""
    if device.type != "cpu" or dtype not in _SUPPORTED_DTYPES:
        return False
    if not native_kernels_enabled("cpu_ops"):
        return False
    return _built()


def usable(x: torch.Tensor) -> bool:
    """x may go through the ops: a supported CPU tensor, contiguous, with no gradient to track (no autograd);
    never while torch.compile traces (inductor fuses the torch code itself)."""
    if torch.compiler.is_compiling():
        return False
    return not x.requires_grad and x.is_contiguous() and cpu_ops_available(x.device, x.dtype)


def _require() -> None:
    if not _built():
        raise RuntimeError("qwick's CPU ops are unavailable here (they need AVX-512F and a C++ compiler; see the "
                           "log): check cpu_ops_available() first")


def _require_bf16(op: str, check: str) -> None:
    if not _bf16_built():
        raise RuntimeError(f"qwick's {op} op is unavailable here (it needs AVX512-BF16 and a C++ compiler): "
                           f"check {check}() first")


def paged_decode(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """q [B, heads, D] -> [B, heads, D]: row b attends to its positions 0..context_lens[b]-1, whose keys and
    values sit in keys/values [slots, kv_heads, D] at the slots its block table [B, W] names."""
    _require()
    return torch.ops.qwick.paged_decode(q, keys, values, block_tables, context_lens, block_size, scale)


def paged_prefill(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, block_table: torch.Tensor, start: int,
                  block_size: int, scale: float) -> torch.Tensor:
    """q [T, heads, D] of one sequence's tokens at positions start .. start+T-1 -> [T, heads, D]: token t attends
    to positions 0 .. start+t, whose keys and values (its own included, already written) sit in keys/values
    [slots, kv_heads, D] at the slots its block table [W] names. bfloat16 only (paged_prefill_available)."""
    _require_bf16("paged_prefill", "paged_prefill_available")
    return torch.ops.qwick.paged_prefill(q, keys, values, block_table, start, block_size, scale)


def pack_linear_bf16(weight: torch.Tensor) -> torch.Tensor:
    """A Linear's weight [N, K] (bfloat16, N % 16 == 0, K even) -> [N / 16, K / 2, 16, 2], linear_bf16's layout:
    per 16 outputs and pair of inputs, the 16 outputs' pairs side by side (csrc/linear_bf16.cpp)."""
    n, k = weight.shape
    return weight.reshape(n // 16, 16, k // 2, 2).transpose(1, 2).contiguous()


def unpack_linear_bf16(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of pack_linear_bf16: [N / 16, K / 2, 16, 2] -> [N, K]."""
    groups, pairs = packed.shape[:2]
    return packed.transpose(1, 2).reshape(groups * 16, pairs * 2)


def linear_bf16(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [M, K] bfloat16 times a pack_linear_bf16 weight -> [M, N] bfloat16 (x @ W.T, float32 sums)."""
    _require_bf16("linear_bf16", "bf16_ops_available")
    return torch.ops.qwick.linear_bf16(x, weight)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., D] -> RMSNorm(x) * weight in x's dtype (layers.RMSNorm's math)."""
    _require()
    return torch.ops.qwick.rms_norm(x, weight, eps)


def qk_norm_rope(x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor,
                 sin: torch.Tensor) -> torch.Tensor:
    """x [N, heads, D], cos/sin [N, D] -> rotary(RMSNorm(x) * weight) (layers.RMSNorm then rope.apply_rotary)."""
    _require()
    return torch.ops.qwick.qk_norm_rope(x, weight, eps, cos, sin)
