"""Weight-only int8: per-output-channel symmetric int8 weights, activations stay in the model dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (int8 [N, K] in -127..127, float32 scales [N]) with weight ≈ q * scale[:, None]."""
    w32 = weight.float()
    scales = w32.abs().amax(dim=1).clamp(min=1e-12) / 127  # [N]; -128 unused so the grid is symmetric
    q = torch.round(w32 / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """Drop-in for a bias-free Linear. On CPU it runs torch's `_weight_int8pack_mm` kernel.

    Deliberately not a `qwick.model.layers.Linear`, so `pack_linears_for_cpu` leaves it alone. The matmul runs
    in the model dtype (scales are stored in it); `quantize_model`'s docstring says why fp32 is not recast.
    """

    def __init__(self, weight_int8: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)  # [N, K] int8
        self.register_buffer("scales", scales)  # [N], model dtype: the kernel wants scales in the activation dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        if linear.bias is not None:
            raise ValueError("Int8Linear supports bias-free Linear layers only (Qwen3 has no projection biases)")
        weight = linear.weight.detach()
        weight = weight.to_dense() if weight.is_mkldnn else weight
        q, scales = quantize_int8(weight)
        return cls(q, scales.to(weight.dtype))

    def dequantize(self) -> torch.Tensor:
        # [N, K] in the scales' dtype
        return self.weight_int8.to(self.scales.dtype) * self.scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)  # [M, K]
        if x2d.device.type == "cpu":
            out = torch.ops.aten._weight_int8pack_mm(x2d.to(self.scales.dtype), self.weight_int8, self.scales)
        else:  # no fused kernel: int8 -> activation dtype is exact, scale the [M, N] output (cheaper than [N, K])
            out = F.linear(x2d, self.weight_int8.to(x2d.dtype)) * self.scales.to(x2d.dtype)
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)  # [..., N]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"
