"""qwick's Triton kernels for CUDA: the KV write into the paged cache (kv_write.py) and paged decode attention
with split-K (paged_decode.py). Only this package's modules import triton, and only when first used, so a
machine without triton still imports qwick. Written against Triton 3.6 (the GPU machine's): no newer features.

On a CPU the kernels run under Triton's interpreter (`TRITON_INTERPRET=1`, set before triton is imported):
that is how tests check them without a GPU (tests/kernels), slowly."""

from __future__ import annotations

import importlib.util
import os

import torch


def interpreter_on() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (read by triton once, at its import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_available(device: torch.device) -> bool:
    """Whether the Triton kernels can run on `device`: triton installed, and a CUDA device (or, for tests, a CPU
    with the interpreter on)."""
    if importlib.util.find_spec("triton") is None:
        return False
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and interpreter_on()
