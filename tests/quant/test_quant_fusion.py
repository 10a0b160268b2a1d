"""fuse_projections: one matmul equal to the concatenated outputs; the originals view its weight (no copy)."""

from __future__ import annotations

import pytest
import torch

from qwick.kernels.woq import qwick_kernels_available
from qwick.model.layers import Linear
from qwick.passes.fusion import fuse_projections
from qwick.quant import Int4Linear, Int8Linear

needs_qwick = pytest.mark.skipif(not qwick_kernels_available(), reason="needs AVX-512 VNNI and a C++ compiler")


def _linears(sizes: list[int], in_features: int = 128) -> list[Linear]:
    torch.manual_seed(0)
    return [Linear(in_features, n, bias=False) for n in sizes]


@pytest.mark.parametrize("make", [
    pytest.param(lambda lin: Int8Linear.from_linear(lin, "qwick"), marks=needs_qwick),
    pytest.param(lambda lin: Int4Linear.from_linear(lin, 64, "qwick"), marks=needs_qwick),
    lambda lin: lin,
])
def test_fused_output_is_the_concatenation_and_storage_is_shared(make) -> None:
    modules = [make(lin) for lin in _linears([64, 32, 32])]
    x = torch.randn(3, 128)
    expected = torch.cat([m(x) for m in modules], dim=-1)
    fused = fuse_projections(modules)
    assert fused is not None and fused.out_features == 128
    torch.testing.assert_close(fused(x), expected, atol=0, rtol=0)
    torch.testing.assert_close(torch.cat([m(x) for m in modules], dim=-1), expected, atol=0, rtol=0)
    fused_tensor = next(iter(fused.buffers() if len(list(fused.buffers())) else fused.parameters()))
    first_tensor = next(iter(modules[0].buffers() if len(list(modules[0].buffers())) else modules[0].parameters()))
    assert first_tensor.data_ptr() == fused_tensor.data_ptr()  # a view, not a copy


def test_modules_that_cannot_share_storage_are_not_fused() -> None:
    int8 = [Int8Linear.from_linear(lin, "torch") for lin in _linears([64, 32])]  # torch layout: no row slicing
    assert fuse_projections(int8) is None
    assert fuse_projections(_linears([64, 32], 128)[:1] + _linears([32], 64)) is None  # different inputs
