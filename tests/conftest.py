from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from checkpoints import copy_tokenizer_files, write_tiny_checkpoint

# Triton decides when a kernel module is imported whether its kernels run compiled or interpreted, and an
# interpreted kernel cannot call a compiled helper: without a GPU, whichever test imports the Triton kernels first
# must already see the interpreter on. Set before any test module loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen3 checkpoint (vocab 151936) with the real Qwen3 tokenizer."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tied_gqa2")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """Only the tokenizer files of a Qwen3 model folder."""
    dest = tmp_path_factory.mktemp("tok")
    copy_tokenizer_files(dest)
    return dest


@pytest.fixture(params=["flat", "grouped"])
def step_path(request, monkeypatch) -> str:
    """Run a test on both engine step paths: one flat forward per step (CPUs with qwick's paged attention op)
    and the padded groups that CUDA, compiled decode and CPUs without AVX-512 use. Engines built in the test
    take the path asked for."""
    import torch

    from qwick.kernels.cpu_ops import cpu_ops_available

    if request.param == "flat" and not cpu_ops_available(torch.device("cpu"), torch.float32):
        pytest.skip("the flat step needs qwick's CPU ops (AVX-512 and a C++ compiler)")
    if request.param == "grouped":
        monkeypatch.setattr("qwick.model.attention.select.BACKENDS", ())  # the portable SDPA backend only
    return request.param
