"""Small building blocks of the Qwen3 decoder: RMSNorm and the SwiGLU MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwick.kernels.cpu_ops import rms_norm, usable


class Linear(nn.Linear):
    """nn.Linear whose single-row bf16/fp16 CPU case runs as a matrix-vector product.

    Batch-1 decode is bound by reading the weights; torch's CPU `mv` streams reduced-precision weights about 25%
    faster than `linear` (measured on AMX Xeon: 23 vs 17 GB/s), while fp32 is the same either way.
    """

    # what passes/cpu_packing.py swapped in (its OneDnnLinear / VnniLinear set these): plain weights here
    pad_rows = False  # oneDNN-packed weights: pad 33-63 rows to a multiple of 16 (AMX CPUs)
    vnni = False  # the weight is in linear_bf16's layout (AVX512-BF16 CPUs without AMX)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1] and x.dtype != torch.float32 and x.device.type == "cpu" and self.bias is None:
            return torch.mv(self.weight, x.reshape(-1)).view(*x.shape[:-1], -1)  # [..., 1, in] -> [..., 1, out]
        return F.linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    """x / rms(x) computed in float32, cast back, then scaled by `weight` (not the 1 + w variant)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if usable(x) and self.weight.dtype == x.dtype:  # one op instead of eight (kernels/cpu_ops.py)
            return rms_norm(x, self.weight, self.eps)
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class MLP(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        hidden = F.silu(self.gate_proj(x), inplace=True)  # in place: saves two activation-sized temporaries
        return self.down_proj(hidden.mul_(self.up_proj(x)))
