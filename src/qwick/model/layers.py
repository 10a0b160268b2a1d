"""Small building blocks of the Qwen3 decoder: RMSNorm and the SwiGLU MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwick.kernels.cpu_ops import linear_bf16, rms_norm, usable

# oneDNN's packed bf16 GEMM (torch 2.13) on an AMX Xeon is ~20% slower for some row counts between 33 and 63 (e.g.
# 34, 41, 49, 57: a 0.6B forward 94-106 ms) than at the next multiple of 16 (79-82 ms); elsewhere padding costs more
# than it saves. Measured on a 2-vCPU AMX box: a heuristic for that kernel; at row counts that were already fast
# (33, 36, 44, 60) it cost up to ~8% in one noisy comparison, ~4% faster averaged over 33-63. Without AMX (AVX512-BF16,
# Zen 4) the GEMM's time grows with the rows (53 rows 0.75 ms, 64 rows 0.90 ms): padding is pure loss there, so
# passes/cpu_packing.py turns it on for AMX CPUs only (`Linear.pad_rows`).
PAD_ROWS_ABOVE, PAD_ROWS_BELOW = 32, 64


class Linear(nn.Linear):
    """nn.Linear whose single-row bf16/fp16 CPU case runs as a matrix-vector product.

    Batch-1 decode is bound by reading the weights; torch's CPU `mv` streams reduced-precision weights about 25%
    faster than `linear` (measured on AMX Xeon: 23 vs 17 GB/s), while fp32 is the same either way.
    """

    pad_rows = False  # packed weights: pad 33-63 rows to a multiple of 16 (set by cpu_packing on AMX CPUs)
    vnni = False  # the weight is in linear_bf16's layout (set by cpu_packing on AVX512-BF16 CPUs without AMX)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.vnni:
            return linear_bf16(x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)
        if self.weight.is_mkldnn:  # packed by passes/cpu_packing.py
            x2d = x.reshape(-1, x.shape[-1])  # [M, in]
            m = x2d.shape[0]
            if self.pad_rows and PAD_ROWS_ABOVE < m < PAD_ROWS_BELOW and m % 16:
                x2d = F.pad(x2d, (0, 0, 0, 16 - m % 16))  # zero rows, dropped below
            out = torch.ops.mkldnn._linear_pointwise(x2d, self.weight, self.bias, "none", [], "")[:m]
            return out.view(*x.shape[:-1], -1)
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
