"""Pass: reorder the bf16 Linear weights (decoder layers and lm_head) for the CPU's fastest kernel (CPU only).

- AMX CPUs, or no AVX512-BF16: oneDNN's blocked layout. Measured on an AMX Xeon, Qwen3-0.6B shape: prefill
  +15-35% over plain `F.linear`, decode as fast as the `mv` path.
- AVX512-BF16 without AMX (Zen 4): qwick's `linear_bf16` layout (kernels/csrc/linear_bf16.cpp), which streams the
  weights faster than oneDNN there: the 0.6B layer stack at 1 / 8 / 32 rows 26.5 / 28 / 72 ms vs 36 / 37 / 78 ms,
  even from 256 rows on. A Linear whose shape it cannot take (outputs not a multiple of 16) gets oneDNN's.
lm_head is packed too: on Zen 4 oneDNN's packed lm_head took 10.6 vs 15.1 ms (plain) at 1 row, 25.6 vs 42.2 ms at
32 rows (not measured on an AMX CPU, where the packed layers were as fast as `mv` at one row and faster above).
Run it last: passes that need dense weights (quantization, LoRA merging) go before it. Each packed Linear is
swapped for a module of its layout (OneDnnLinear, VnniLinear): `Linear.forward` knows no packing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwick.kernels.build import cpu_has_flags
from qwick.kernels.cpu_ops import bf16_ops_available, linear_bf16, pack_linear_bf16, unpack_linear_bf16
from qwick.model.layers import Linear
from qwick.model.qwen3 import Qwen3ForCausalLM

# oneDNN's packed bf16 GEMM (torch 2.13) on an AMX Xeon is ~20% slower for some row counts between 33 and 63 (e.g.
# 34, 41, 49, 57: a 0.6B forward 94-106 ms) than at the next multiple of 16 (79-82 ms); elsewhere padding costs more
# than it saves. Measured on a 2-vCPU AMX box: a heuristic for that kernel; at row counts that were already fast
# (33, 36, 44, 60) it cost up to ~8% in one noisy comparison, ~4% faster averaged over 33-63. Without AMX (AVX512-BF16,
# Zen 4) the GEMM's time grows with the rows (53 rows 0.75 ms, 64 rows 0.90 ms): padding is pure loss there, so
# passes/cpu_packing.py turns it on for AMX CPUs only (`Linear.pad_rows`).
PAD_ROWS_ABOVE, PAD_ROWS_BELOW = 32, 64


class OneDnnLinear(Linear):
    """A Linear whose weight is in oneDNN's blocked layout (an mkldnn tensor), run by oneDNN's packed GEMM."""

    def __init__(self, linear: Linear, pad_rows: bool) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")
        self.weight = nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1),
                                   requires_grad=False)
        self.bias = linear.bias
        self.pad_rows = pad_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, x.shape[-1])  # [M, in]
        m = x2d.shape[0]
        if self.pad_rows and PAD_ROWS_ABOVE < m < PAD_ROWS_BELOW and m % 16:
            x2d = F.pad(x2d, (0, 0, 0, 16 - m % 16))  # zero rows, dropped below
        out = torch.ops.mkldnn._linear_pointwise(x2d, self.weight, self.bias, "none", [], "")[:m]
        return out.view(*x.shape[:-1], -1)


class VnniLinear(Linear):
    """A bias-free bf16 Linear whose weight is in linear_bf16's layout [N / 16, K / 2, 16, 2] (kernels/cpu_ops.py)."""

    vnni = True

    def __init__(self, linear: Linear) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")
        self.weight = nn.Parameter(pack_linear_bf16(linear.weight.detach()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_bf16(x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


def cpu_packing_supported(dtype: torch.dtype, device: torch.device) -> bool:
    return (device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack_linears_for_cpu(model: Qwen3ForCausalLM) -> int:
    """Pack every plain Linear of the decoder layers, and lm_head. A tied lm_head gets a packed copy (the
    embedding keeps the dense rows it looks up): +vocab x hidden weights in memory (311 MB for 0.6B in bf16).
    Returns the count of packed Linears."""
    amx = cpu_has_flags(("amx_bf16",))
    vnni = not amx and bf16_ops_available()
    slots = [(parent, name, child) for parent in model.model.layers.modules()
             for name, child in parent.named_children() if isinstance(child, Linear)]
    if model.has_lm_head and isinstance(model.lm_head, Linear):  # quantized heads are other modules
        slots.append((model, "lm_head", model.lm_head))
    packed = 0
    for parent, name, module in slots:
        if isinstance(module, OneDnnLinear | VnniLinear):
            continue
        if vnni and module.out_features % 16 == 0 and module.in_features % 2 == 0 and module.bias is None:
            setattr(parent, name, VnniLinear(module))
        else:
            # a row-count heuristic for oneDNN's AMX kernel, measured on the layers' shapes only
            setattr(parent, name, OneDnnLinear(module, pad_rows=amx and module is not model.lm_head))
        packed += 1
    return packed


def dense_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with packed weights turned back into ordinary tensors (e.g. to hand them to transformers)."""
    state = {k: v.to_dense() if v.is_mkldnn else v for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, VnniLinear):
            state[f"{name}.weight"] = unpack_linear_bf16(module.weight.detach())
    return state
