"""Weight-only int4: group-wise asymmetric 4-bit weights, w ≈ q * scale + min with q in 0..15 per group."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwick.kernels.woq import resolve_kernel
from qwick.quant.int8 import dense_weight
from qwick.quant.layout import block_int4, pack_nibbles, unpack_nibbles
from qwick.quant.options import INT4_GROUP_SIZES

CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
_CPU_N_MULTIPLE = 16  # `_convert_weight_to_int4pack_for_cpu` rejects out_features not divisible by 16


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, K] float -> (q uint8 [N, K] in 0..15, scale float16 [N, K/g], min float16 [N, K/g]).

    Per group of `group_size` input columns, the min/max range shrunk by whichever of CLIP_RATIOS gives the
    least squared error (clipping a few outliers buys finer steps for the rest; KL -3% at g32, -12% at g64
    on the tiny test models). Scale and min are rounded to float16 (what is stored and what every kernel
    reads) before q is chosen, so q is the best code for the stored scale and min.
    """
    n, k = weight.shape
    groups = weight.float().view(n, k // group_size, group_size)  # [N, K/g, g]
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    for ratio in CLIP_RATIOS:
        lo, hi = groups.amin(dim=-1) * ratio, groups.amax(dim=-1) * ratio  # [N, K/g]
        scale = ((hi - lo) / 15).clamp(min=1e-6).half().float()  # fp16 keeps ~1e-7 as a subnormal: stay above
        lo = lo.half().float()
        q = torch.round((groups - lo[..., None]) / scale[..., None]).clamp(0, 15)  # [N, K/g, g]
        err = (q * scale[..., None] + lo[..., None] - groups).pow(2).sum(dim=-1)  # [N, K/g]
        if best is None:
            best = (err, q, scale, lo)
            continue
        better = err < best[0]
        best = (torch.where(better, err, best[0]), torch.where(better[..., None], q, best[1]),
                torch.where(better, scale, best[2]), torch.where(better, lo, best[3]))
    assert best is not None
    _, q, scale, lo = best
    return q.to(torch.uint8).view(n, k), scale.half(), lo.half()


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_int4`: q [N, K] 0..15 with scale/min [N, K/g] -> float32 [N, K]."""
    n, k = q.shape
    g = k // scale.shape[1]
    groups = q.view(n, k // g, g).float() * scale.float()[..., None] + mins.float()[..., None]
    return groups.view(n, k)


class Int4Linear(nn.Module):
    """Drop-in for a bias-free Linear with int4 weights (a quarter of bf16's bytes, plus 4 bytes per group).

    kernel "qwick": qwick's AVX-512 op on the blocked layout (float16 scale/min). kernel "torch": on CPU with
    out_features % 16 == 0, `_weight_int4pack_mm_for_cpu` (its convention: (q - 8) * scale + zero, zero =
    min + 8 * scale, in the activation dtype); otherwise (other devices, odd shapes) plain nibbles dequantized
    per call. Not a `qwick.model.layers.Linear`, so `pack_linears_for_cpu` skips it.
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, mins: torch.Tensor, dtype: torch.dtype,
                 kernel: str = "auto", *, device: torch.device | None = None) -> None:
        # device: where it will run (default q's); the checkpoint loader builds empty ones on meta for it
        super().__init__()
        device = device or q.device
        self.out_features, self.in_features = q.shape
        self.group_size = self.in_features // scale.shape[1]
        self.kernel = resolve_kernel(kernel, device)
        self.dtype = dtype
        if self.kernel == "qwick":
            self.layout = "qwick"
        elif device.type == "cpu" and self.out_features % _CPU_N_MULTIPLE == 0:
            self.layout = "int4pack"
        else:
            self.layout = "nibbles"
        for name, tensor in self.layout_buffers(q, scale, mins).items():
            self.register_buffer(name, tensor)

    def layout_buffers(self, q: torch.Tensor, scale: torch.Tensor, mins: torch.Tensor) -> dict[str, torch.Tensor]:
        """This module's buffers holding q [N, K] and scale/min [N, K/g] in its layout."""
        if self.layout == "qwick":
            return {"weight_packed": block_int4(q),  # [ceil(N/4), ceil(K/64), 4, 32]
                    "scale": scale.half().contiguous(),  # [N, K/g]
                    "mins": mins.half().contiguous()}
        if self.layout == "int4pack":
            zeros = mins.float() + 8 * scale.float()  # the kernel computes (q - 8) * scale + zero
            return {"weight_packed": torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.int(), 1),
                    "scales_and_zeros": torch.stack([scale.float().t(), zeros.t()], dim=-1)
                    .to(self.dtype).contiguous()}  # [K/g, N, 2]
        return {"weight_packed": pack_nibbles(q),  # [N, ceil(K/2)]
                "scale": scale.to(self.dtype), "mins": mins.to(self.dtype)}

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, kernel: str = "auto") -> Int4Linear:
        if linear.bias is not None:
            raise ValueError("Int4Linear supports bias-free Linear layers only (Qwen3 has no projection biases)")
        if group_size not in INT4_GROUP_SIZES or linear.in_features % group_size:
            raise ValueError(f"int4 group_size must be one of {INT4_GROUP_SIZES} and divide in_features "
                             f"({linear.in_features}), got {group_size}")
        weight = dense_weight(linear)
        return cls(*quantize_int4(weight, group_size), weight.dtype, kernel)

    def dequantize(self) -> torch.Tensor:
        # [N, K] float32 (the nibble fallback's path; also what tests compare the kernels against)
        if self.layout == "qwick":
            return torch.ops.qwick.int4_dequantize(self.weight_packed, self.scale, self.mins, self.group_size,
                                                   self.in_features, torch.float32)
        if self.layout == "int4pack":  # an opaque layout: recover it by multiplying the identity
            eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype, device=self.weight_packed.device)
            return self(eye).t().float().contiguous()
        return dequantize_int4(unpack_nibbles(self.weight_packed, self.in_features), self.scale, self.mins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)  # [M, K]
        if self.layout == "qwick":
            out = torch.ops.qwick.int4_linear(x2d, self.weight_packed, self.scale, self.mins, self.group_size)
        elif self.layout == "int4pack":
            if x2d.device.type != "cpu":
                raise RuntimeError("this Int4Linear holds torch's CPU-only packed layout: move the model to its "
                                   "device first, then quantize")
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x2d.to(self.scales_and_zeros.dtype).contiguous(),
                                                             self.weight_packed, self.group_size,
                                                             self.scales_and_zeros)
        else:
            out = F.linear(x2d, self.dequantize().to(x2d.dtype))
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)  # [..., N]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4 asymmetric, "
                f"group_size={self.group_size}, layout={self.layout}")
