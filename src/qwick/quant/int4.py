"""Weight-only int4: group-wise asymmetric 4-bit weights (w ≈ (q - 8) * scale + zero), torch's CPU kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INT4_GROUP_SIZES = (32, 64, 128)
_CPU_N_MULTIPLE = 16  # `_convert_weight_to_int4pack_for_cpu` rejects out_features not divisible by 16


CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (q int32 [N, K] in 0..15, float32 scales_and_zeros [K/g, N, 2]).

    Per group of `group_size` input columns, the min/max range shrunk by whichever of CLIP_RATIOS gives the
    least squared error (clipping a few outliers buys finer steps for the rest; KL -3% at g32, -12% at g64
    on the tiny test models). Layout and the "q - 8" offset are what `_weight_int4pack_mm_for_cpu` expects
    (checked against a dequantized reference in tests/quant).
    """
    n, k = weight.shape
    groups = weight.float().view(n, k // group_size, group_size)  # [N, K/g, g]
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    for ratio in CLIP_RATIOS:
        lo, hi = groups.amin(dim=-1) * ratio, groups.amax(dim=-1) * ratio  # [N, K/g]
        scales = ((hi - lo) / 15).clamp(min=1e-8)
        q = torch.round((groups - lo[..., None]) / scales[..., None]).clamp(0, 15)  # [N, K/g, g]
        err = (q * scales[..., None] + lo[..., None] - groups).pow(2).sum(dim=-1)  # [N, K/g]
        if best is None:
            best = (err, q, scales, lo)
            continue
        better = err < best[0]
        best = (torch.where(better, err, best[0]), torch.where(better[..., None], q, best[1]),
                torch.where(better, scales, best[2]), torch.where(better, lo, best[3]))
    assert best is not None
    _, q, scales, lo = best
    zeros = lo + 8 * scales  # the kernel subtracts 8 from q, so fold it into the zero point
    return q.to(torch.int32).view(n, k), torch.stack([scales.t(), zeros.t()], dim=-1).contiguous()  # [K/g, N, 2]


def dequantize_int4(q: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """Inverse of `quantize_int4`: q int [N, K] 0..15 -> [N, K] in scales_and_zeros' dtype."""
    n, k = q.shape
    scales, zeros = scales_and_zeros[..., 0].t(), scales_and_zeros[..., 1].t()  # [N, K/g] each
    groups = (q.view(n, k // group_size, group_size).to(scales.dtype) - 8) * scales[..., None] + zeros[..., None]
    return groups.view(n, k)


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    # [N, K] int 0..15 -> uint8 [N, K/2], even column in the low nibble
    q = q.to(torch.uint8)
    return q[:, ::2] | (q[:, 1::2] << 4)


def _unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    # uint8 [N, K/2] -> uint8 [N, K]
    return torch.stack([packed & 15, packed >> 4], dim=-1).view(packed.shape[0], -1)


class Int4Linear(nn.Module):
    """Drop-in for a bias-free Linear with int4 weights (a quarter of bf16's bytes, plus 2 values per group).

    On CPU with out_features % 16 == 0 the weight is stored in the kernel's own packed layout; otherwise
    (other devices, odd shapes) as plain nibbles and dequantized per call. Not a `qwick.model.layers.Linear`,
    so `pack_linears_for_cpu` skips it.
    """

    def __init__(self, packed: torch.Tensor, scales_and_zeros: torch.Tensor, in_features: int, group_size: int,
                 uses_cpu_kernel: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, scales_and_zeros.shape[1]
        self.group_size = group_size
        self.uses_cpu_kernel = uses_cpu_kernel
        self.register_buffer("weight_int4", packed)  # uint8 [N, K/2], kernel layout or plain nibbles
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # [K/g, N, 2], model dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128) -> Int4Linear:
        if linear.bias is not None:
            raise ValueError("Int4Linear supports bias-free Linear layers only (Qwen3 has no projection biases)")
        if group_size not in INT4_GROUP_SIZES or linear.in_features % group_size:
            raise ValueError(f"int4 group_size must be one of {INT4_GROUP_SIZES} and divide in_features "
                             f"({linear.in_features}), got {group_size}")
        weight = linear.weight.detach()
        weight = weight.to_dense() if weight.is_mkldnn else weight
        q, scales_and_zeros = quantize_int4(weight, group_size)
        use_kernel = weight.device.type == "cpu" and linear.out_features % _CPU_N_MULTIPLE == 0
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1) if use_kernel else _pack_nibbles(q)
        return cls(packed, scales_and_zeros.to(weight.dtype), linear.in_features, group_size, use_kernel)

    def dequantize(self) -> torch.Tensor:
        # [N, K] in the model dtype (the fallback path; also what tests compare the kernel against)
        if self.uses_cpu_kernel:  # the kernel layout is opaque: recover it by multiplying the identity
            eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype, device=self.weight_int4.device)
            return self(eye).t().contiguous()
        return dequantize_int4(_unpack_nibbles(self.weight_int4), self.scales_and_zeros, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)  # [M, K]
        if self.uses_cpu_kernel:
            if x2d.device.type != "cpu":
                raise RuntimeError("this Int4Linear holds torch's CPU-only packed layout: move the model to its "
                                   "device first, then quantize")
            dtype = self.scales_and_zeros.dtype
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x2d.to(dtype).contiguous(), self.weight_int4,
                                                             self.group_size, self.scales_and_zeros)
        else:
            out = F.linear(x2d, self.dequantize().to(x2d.dtype))
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)  # [..., N]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4 asymmetric, "
                f"group_size={self.group_size}, cpu_kernel={self.uses_cpu_kernel}")
