"""linear_bf16 (kernels/csrc/linear_bf16.cpp) equals torch's bf16 linear: float32 sums rounded to bfloat16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwick.kernels.cpu_ops import bf16_ops_available, linear_bf16, pack_linear_bf16, unpack_linear_bf16

needs_op = pytest.mark.skipif(not bf16_ops_available(), reason="needs AVX512-BF16 and a C++ compiler")


def test_packing_round_trips_and_pairs_inputs_per_16_outputs():
    weight = torch.arange(32 * 6, dtype=torch.float32).reshape(32, 6).bfloat16()
    packed = pack_linear_bf16(weight)
    assert packed.shape == (2, 3, 16, 2) and packed.is_contiguous()
    assert packed[1, 2, 5].tolist() == weight[16 + 5, 4:6].tolist()  # outputs 16-31, inputs 4-5, output 21
    assert torch.equal(unpack_linear_bf16(packed), weight)


@needs_op
@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 17, 47, 64, 130])
@pytest.mark.parametrize(("outputs", "inputs"), [(16, 2), (32, 64), (48, 128), (80, 96), (1040, 1024)])
def test_matches_torch(rows: int, outputs: int, inputs: int) -> None:
    gen = torch.Generator().manual_seed(rows * 7 + outputs + inputs)
    x = torch.randn(rows, inputs, generator=gen).bfloat16()
    weight = torch.randn(outputs, inputs, generator=gen).bfloat16()
    got = linear_bf16(x, pack_linear_bf16(weight))
    exact = F.linear(x.float(), weight.float())  # bf16 x bf16 products are exact in float32
    assert got.dtype == torch.bfloat16 and got.shape == (rows, outputs)
    # rounded once from float32 sums (another summation order than torch's): within one bf16 step of the exact sum
    step = torch.finfo(torch.bfloat16).eps * exact.abs().clamp_min(1e-3)
    assert ((got.float() - exact).abs() <= step + 1e-4 * inputs**0.5).all()


@needs_op
def test_no_rows_and_non_contiguous_rows():
    weight = pack_linear_bf16(torch.randn(32, 64).bfloat16())
    assert linear_bf16(torch.zeros(0, 64).bfloat16(), weight).shape == (0, 32)
    x = torch.randn(64, 10).bfloat16().t()  # [10, 64], not contiguous
    assert torch.equal(linear_bf16(x, weight), linear_bf16(x.contiguous(), weight))


@needs_op
def test_rejects_bad_arguments_with_a_message():
    weight = pack_linear_bf16(torch.randn(32, 64).bfloat16())
    with pytest.raises(RuntimeError, match="x has 63 inputs, the weight 64"):
        linear_bf16(torch.zeros(2, 63).bfloat16(), weight)
    with pytest.raises(RuntimeError, match="bfloat16 inputs and weights"):
        linear_bf16(torch.zeros(2, 64), weight)
    with pytest.raises(RuntimeError, match="packed weight"):
        linear_bf16(torch.zeros(2, 64).bfloat16(), torch.zeros(32, 64).bfloat16())
