"""The device suite: the engine's guarantees re-checked on a CUDA GPU. CI has no GPU, so it skips there.

`QWICK_TEST_DEVICE=cpu pytest tests/cuda` runs the same tests on the CPU through the portable step path (padded
groups with gather + SDPA, no qwick CPU ops): that checks the tests themselves on a machine without a GPU. With
`QWICK_ATTENTION_BACKEND=triton TRITON_INTERPRET=1` besides, the CPU runs CUDA's own backend (flat steps, the
Triton kernels interpreted; slow: ~20 min, and the gate endpoint misses its 2 s deadline there). `benchmarks/gpu_check.sh` runs this suite (graphs on and off)
and the GPU benchmarks in one call on a lent GPU machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


def target_device() -> str | None:
    forced = os.environ.get("QWICK_TEST_DEVICE")
    if forced:
        return forced
    return "cuda" if torch.cuda.is_available() else None


@pytest.fixture(scope="session")
def device() -> Iterator[str]:
    """The device under test; on the CPU (a dry run) the engine is held to CUDA's step path."""
    name = target_device()
    if name is None:
        pytest.skip("needs a CUDA GPU (QWICK_TEST_DEVICE=cpu dry-runs these tests on the CPU)")
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 parity means float32 matmuls, not TF32
    torch.backends.cudnn.allow_tf32 = False
    with pytest.MonkeyPatch.context() as patch:
        if torch.device(name).type == "cpu":
            patch.setenv("QWICK_CPU_OPS", "torch")  # read at every check: no flat step, no fused ops
        yield name


@pytest.fixture(scope="session", autouse=True)
def eager_when_asked() -> Iterator[None]:
    """QWICK_TEST_ENFORCE_EAGER=1: every engine built in the suite decodes without CUDA graphs (the suite's second
    run on a GPU, benchmarks/gpu_check.sh); session-wide, so module-scoped engines are built that way too."""
    with pytest.MonkeyPatch.context() as patch:
        if os.environ.get("QWICK_TEST_ENFORCE_EAGER") == "1":
            patch.setattr("qwick.engine.builder.capture_decode_graphs", lambda *args, **kwargs: None)
        yield
