"""Int8Linear / Int4Linear equal a dequantized reference on every kernel: qwick's AVX-512 ops and torch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qwick.kernels.woq import qwick_kernels_available
from qwick.quant import Int4Linear, Int8Linear, int4
from qwick.quant.int4 import dequantize_int4, quantize_int4
from qwick.quant.layout import block_int4, block_int8, gather_int8_rows, pack_nibbles, unpack_nibbles

KERNELS = [pytest.param("qwick", marks=pytest.mark.skipif(not qwick_kernels_available(),
                                                          reason="needs AVX-512 VNNI and a C++ compiler")),
           "torch"]
# (out_features, in_features): multiples of the kernels' blocks, and odd ones (rows % 4, columns % 32/64)
SHAPES = [(64, 256), (70, 96), (13, 160), (48, 64)]


def _linear(out_features: int, in_features: int, dtype: torch.dtype = torch.float32) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features, bias=False).to(dtype)


def _assert_matches(out: torch.Tensor, expected: torch.Tensor, relative: float) -> None:
    torch.testing.assert_close(out.float(), expected, atol=relative * expected.abs().max().item(), rtol=0)


def test_int8_round_trip_error_is_at_most_half_a_step() -> None:
    linear = _linear(64, 96)
    module = Int8Linear.from_linear(linear)
    step = linear.weight.abs().amax(dim=1, keepdim=True) / 127
    assert ((module.dequantize() - linear.weight).abs() <= step / 2 + 1e-7).all()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("out_features", "in_features"), SHAPES)
@pytest.mark.parametrize("rows", [1, 3, 6, 20])  # decode (1..16 rows: matvec kernel) and prefill (dequantize)
def test_int8_kernel_equals_dequantized_matmul(kernel: str, out_features: int, in_features: int, rows: int) -> None:
    module = Int8Linear.from_linear(_linear(out_features, in_features), kernel)
    x = torch.randn(rows, in_features)
    out = module(x)
    assert out.shape == (rows, out_features) and out.dtype == torch.float32
    _assert_matches(out, F.linear(x, module.dequantize()), 1e-4)  # qwick's int16 activations: ~3e-5


@pytest.mark.parametrize("kernel", KERNELS)
def test_int8_bf16_activations(kernel: str) -> None:
    module = Int8Linear.from_linear(_linear(64, 256, torch.bfloat16), kernel)
    x = torch.randn(2, 1, 256).to(torch.bfloat16)  # [B, T, K]
    out = module(x)
    assert out.shape == (2, 1, 64) and out.dtype == torch.bfloat16
    _assert_matches(out, F.linear(x.float(), module.dequantize()), 2e-2)


def test_int8_lm_head_returns_float32_logits() -> None:
    module = Int8Linear.from_linear(_linear(64, 128, torch.bfloat16), out_dtype=torch.float32)
    assert module(torch.randn(1, 128, dtype=torch.bfloat16)).dtype == torch.float32


def test_int4_convention_is_q_times_scale_plus_min() -> None:
    weight = _linear(32, 64).weight
    q, scale, mins = quantize_int4(weight, 32)
    assert q.dtype == torch.uint8 and q.max() <= 15 and scale.shape == mins.shape == (32, 2)
    assert scale.dtype == mins.dtype == torch.float16  # stored precision; q is chosen for the rounded values
    expanded = [t.float().repeat_interleave(32, dim=1) for t in (scale, mins)]
    dequantized = dequantize_int4(q, scale, mins)
    torch.testing.assert_close(dequantized, q.float() * expanded[0] + expanded[1])
    inside = (weight >= expanded[1]) & (weight <= expanded[1] + 15 * expanded[0])  # not clipped by the search
    assert ((dequantized - weight).abs() <= expanded[0] / 2 + 1e-5)[inside].all()


def test_int4_clip_search_never_loses_to_plain_min_max(monkeypatch: pytest.MonkeyPatch) -> None:
    weight = _linear(64, 256).weight

    def squared_error() -> float:
        return (dequantize_int4(*quantize_int4(weight, 128)) - weight).pow(2).sum().item()

    searched = squared_error()
    monkeypatch.setattr(int4, "CLIP_RATIOS", (1.0,))
    assert searched < squared_error()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize(("out_features", "in_features"), [(48, 256), (13, 128), (70, 384)])
@pytest.mark.parametrize("rows", [1, 5, 20])
def test_int4_kernel_equals_dequantized_reference(kernel: str, group_size: int, out_features: int,
                                                  in_features: int, rows: int) -> None:
    linear = _linear(out_features, in_features)
    module = Int4Linear.from_linear(linear, group_size, kernel)
    reference = dequantize_int4(*quantize_int4(linear.weight, group_size))  # [N, K], independent of the kernels
    torch.testing.assert_close(module.dequantize(), reference, atol=1e-6, rtol=0)
    x = torch.randn(rows, in_features)
    _assert_matches(module(x), F.linear(x, reference), 1e-4)


@pytest.mark.parametrize("kernel", KERNELS)
def test_int4_with_in_features_an_odd_multiple_of_32(kernel: str) -> None:  # half a 64-column step is padding
    linear = _linear(20, 96)
    module = Int4Linear.from_linear(linear, 32, kernel)
    x = torch.randn(3, 96)
    _assert_matches(module(x), F.linear(x, dequantize_int4(*quantize_int4(linear.weight, 32))), 1e-4)


def test_torch_kernel_falls_back_to_nibbles_when_out_features_do_not_fit_it() -> None:
    module = Int4Linear.from_linear(_linear(40, 64), 32, kernel="torch")  # 40 % 16 != 0: torch's packer refuses
    assert module.layout == "nibbles" and module.weight_packed.shape == (40, 32)


def test_layouts_round_trip() -> None:
    q4 = torch.randint(0, 16, (7, 33), dtype=torch.uint8)
    assert torch.equal(unpack_nibbles(pack_nibbles(q4), 33), q4)
    blocked = block_int4(q4)
    assert blocked.shape == (2, 1, 4, 32)  # ceil(7/4) blocks, ceil(33/64) steps
    assert torch.equal(blocked[1, 0, 2, :17] & 15, q4[6, :17])  # row 6 = block 1 row 2; column j low nibble
    q8 = torch.randint(-127, 128, (9, 40), dtype=torch.int8)
    ids = torch.tensor([[0, 8], [5, 3]])
    assert torch.equal(gather_int8_rows(block_int8(q8), ids, 40), q8[ids])


@pytest.mark.parametrize("factory", [Int8Linear.from_linear, Int4Linear.from_linear])
def test_biased_linear_is_refused(factory) -> None:
    with pytest.raises(ValueError, match="bias-free"):
        factory(nn.Linear(128, 32))


def test_int4_group_size_must_divide_in_features() -> None:
    with pytest.raises(ValueError, match="group_size"):
        Int4Linear.from_linear(_linear(32, 96), 64)


def test_unknown_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="kernel must be one of"):
        Int8Linear.from_linear(_linear(32, 64), kernel="fbgemm")
