"""Int8Linear and Int4Linear match a dequantized reference, on torch's CPU kernels and on the fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qwick.quant import Int4Linear, Int8Linear, int4
from qwick.quant.int4 import dequantize_int4, quantize_int4


def _linear(out_features: int, in_features: int, dtype: torch.dtype = torch.float32) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features, bias=False).to(dtype)


def test_int8_round_trip_error_is_at_most_half_a_step() -> None:
    linear = _linear(64, 96)
    module = Int8Linear.from_linear(linear)
    step = linear.weight.abs().amax(dim=1, keepdim=True) / 127
    assert module.weight_int8.dtype == torch.int8
    assert ((module.dequantize() - linear.weight).abs() <= step / 2 + 1e-7).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_cpu_kernel_equals_dequantized_matmul(dtype: torch.dtype) -> None:
    module = Int8Linear.from_linear(_linear(64, 96, dtype))
    x = torch.randn(2, 3, 96).to(dtype)  # [B, T, K]
    expected = F.linear(x.float(), module.dequantize().float())
    out = module(x)
    assert out.shape == (2, 3, 64) and out.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(out.float(), expected, atol=tol * expected.abs().max().item(), rtol=0)


def test_int4_convention_is_q_minus_8_times_scale_plus_zero() -> None:
    weight = _linear(32, 64).weight
    q, scales_and_zeros = quantize_int4(weight, 32)
    assert q.min() >= 0 and q.max() <= 15 and scales_and_zeros.shape == (2, 32, 2)  # [K/g, N, 2]
    scales, zeros = (scales_and_zeros[..., i].t().repeat_interleave(32, dim=1) for i in (0, 1))  # [N, K] each
    dequantized = dequantize_int4(q, scales_and_zeros, 32)
    torch.testing.assert_close(dequantized, (q - 8) * scales + zeros)
    inside = (weight >= zeros - 8 * scales) & (weight <= zeros + 7 * scales)  # not clipped by the range search
    assert ((dequantized - weight).abs() <= scales / 2 + 1e-6)[inside].all()


def test_int4_clip_search_never_loses_to_plain_min_max(monkeypatch: pytest.MonkeyPatch) -> None:
    weight = _linear(64, 256).weight

    def squared_error() -> float:
        q, scales_and_zeros = quantize_int4(weight, 128)
        return (dequantize_int4(q, scales_and_zeros, 128) - weight).pow(2).sum().item()

    searched = squared_error()
    monkeypatch.setattr(int4, "CLIP_RATIOS", (1.0,))
    assert searched < squared_error()


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_cpu_kernel_equals_dequantized_reference(group_size: int) -> None:
    linear = _linear(48, 256)
    module = Int4Linear.from_linear(linear, group_size)
    assert module.uses_cpu_kernel
    q, scales_and_zeros = quantize_int4(linear.weight, group_size)
    reference = dequantize_int4(q, scales_and_zeros, group_size)  # [N, K], independent of the kernel
    x = torch.randn(5, 256)
    torch.testing.assert_close(module(x), F.linear(x, reference), atol=1e-4, rtol=1e-4)


def test_int4_falls_back_to_nibbles_when_out_features_do_not_fit_the_kernel() -> None:
    linear = _linear(40, 64)  # 40 % 16 != 0: the CPU packer refuses it
    module = Int4Linear.from_linear(linear, 32)
    assert not module.uses_cpu_kernel and module.weight_int4.shape == (40, 32)
    q, scales_and_zeros = quantize_int4(linear.weight, 32)
    x = torch.randn(3, 64)
    torch.testing.assert_close(module(x), F.linear(x, dequantize_int4(q, scales_and_zeros, 32)))


def test_int4_bf16_activations_run_on_the_kernel() -> None:
    module = Int4Linear.from_linear(_linear(64, 128, torch.bfloat16), 64)
    x = torch.randn(1, 1, 128, dtype=torch.bfloat16)
    out = module(x)
    expected = F.linear(x.float(), module.dequantize().float())
    assert out.dtype == torch.bfloat16 and out.shape == (1, 1, 64)
    torch.testing.assert_close(out.float(), expected, atol=5e-2 * expected.abs().max().item(), rtol=0)


@pytest.mark.parametrize("factory", [Int8Linear.from_linear, Int4Linear.from_linear])
def test_biased_linear_is_refused(factory) -> None:
    with pytest.raises(ValueError, match="bias-free"):
        factory(nn.Linear(128, 32))


def test_int4_group_size_must_divide_in_features() -> None:
    with pytest.raises(ValueError, match="group_size"):
        Int4Linear.from_linear(_linear(32, 96), 64)
