"""Choosing the device, dtype and thread count."""

from __future__ import annotations

import os
from pathlib import Path

import torch

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA GPU (use device='cpu' or 'auto')")
    return resolved


def cpu_has_native_bf16() -> bool:
    """AMX-BF16 or AVX512-BF16: bf16 matmuls run at full speed (measured 3-5x faster than fp32 at prefill).
    Without them (e.g. AVX2-only), torch emulates bf16 and fp32 prefill is ~5x faster (notes/cpu-baselines.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, config_dtype: str | None) -> torch.dtype:
    """`auto`: the checkpoint's dtype on GPU; on CPU bfloat16 where the CPU has bf16 math, else float32."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        return dtype
    if dtype != "auto":
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of auto, float32, bfloat16, float16; got {dtype!r}")
        return _DTYPES[dtype]
    if device.type == "cuda":
        wanted = _DTYPES.get(str(config_dtype), torch.bfloat16)
        if wanted == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return torch.float16
        return wanted
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def resolve_threads(threads: int | None) -> int:
    """Intra-op threads: `threads`, else torch's default (physical cores) capped by the CPUs this process may
    use (affinity mask, cgroup quota): more threads than CPUs makes OpenMP threads wait for each other."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        return threads
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            available = min(available, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(torch.get_num_threads(), available))
