"""The Triton kernels' tests: on a CUDA GPU when there is one, else on CPU tensors under Triton's interpreter.

TRITON_INTERPRET must be set when the kernel modules are imported (triton.jit reads it then): tests/conftest.py
turns it on for the whole session on a machine without a GPU, before any test imports them (the engine's backend
selection may import them before these tests run). The fixture below also sets it, for runs of this folder alone.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture(scope="session")
def kernel_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def triton_kernels(kernel_device) -> Iterator[SimpleNamespace]:
    """The kernel modules, imported for `kernel_device` (interpreted on a CPU)."""
    saved = os.environ.get("TRITON_INTERPRET")
    if kernel_device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        pytest.importorskip("triton")
        yield SimpleNamespace(paged_decode=importlib.import_module("qwick.kernels.triton.paged_decode"),
                              kv_write=importlib.import_module("qwick.kernels.triton.kv_write"))
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
