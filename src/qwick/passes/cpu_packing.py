"""Pass: reorder the bf16 Linear weights (decoder layers and lm_head) for the CPU's fastest kernel (CPU only).

- AMX CPUs, or no AVX512-BF16: oneDNN's blocked layout. Measured on an AMX Xeon, Qwen3-0.6B shape: prefill
  +15-35% over plain `F.linear`, decode as fast as the `mv` path.
- AVX512-BF16 without AMX (Zen 4): qwick's `linear_bf16` layout (kernels/csrc/linear_bf16.cpp), which streams the
  weights faster than oneDNN there: the 0.6B layer stack at 1 / 8 / 32 rows 26.5 / 28 / 72 ms vs 36 / 37 / 78 ms,
  even from 256 rows on. A Linear whose shape it cannot take (outputs not a multiple of 16) gets oneDNN's.
lm_head is packed too: on Zen 4 oneDNN's packed lm_head took 10.6 vs 15.1 ms (plain) at 1 row, 25.6 vs 42.2 ms at
32 rows (not measured on an AMX CPU, where the packed layers were as fast as `mv` at one row and faster above).
Run it last: passes that need dense weights (quantization, LoRA merging) go before it.
"""

from __future__ import annotations

import torch

from qwick.kernels.build import cpu_has_flags
from qwick.kernels.cpu_ops import bf16_ops_available, pack_linear_bf16, unpack_linear_bf16
from qwick.model.layers import Linear
from qwick.model.qwen3 import Qwen3ForCausalLM


def cpu_packing_supported(dtype: torch.dtype, device: torch.device) -> bool:
    return (device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack_linears_for_cpu(model: Qwen3ForCausalLM) -> int:
    """Pack every plain Linear of the decoder layers, and lm_head. A tied lm_head gets a packed copy (the
    embedding keeps the dense rows it looks up): +vocab x hidden weights in memory (311 MB for 0.6B in bf16).
    Returns the count of packed Linears."""
    amx = cpu_has_flags(("amx_bf16",))
    vnni = not amx and bf16_ops_available()
    linears = [m for m in model.model.layers.modules() if isinstance(m, Linear)]
    if model.has_lm_head and isinstance(model.lm_head, Linear):  # quantized heads are other modules
        linears.append(model.lm_head)
    packed = 0
    for module in linears:
        if module.weight.is_mkldnn or module.vnni:
            continue
        weight = module.weight.detach()
        if vnni and module.out_features % 16 == 0 and module.in_features % 2 == 0 and module.bias is None:
            module.weight = torch.nn.Parameter(pack_linear_bf16(weight), requires_grad=False)
            module.vnni = True
        else:
            module.weight = torch.nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(weight, 1), requires_grad=False)
            # layers.py: a row-count heuristic for oneDNN's AMX kernel, measured on the layers' shapes only
            module.pad_rows = amx and module is not model.lm_head
        packed += 1
    return packed


def dense_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with packed weights turned back into ordinary tensors (e.g. to hand them to transformers)."""
    state = {k: v.to_dense() if v.is_mkldnn else v for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, Linear) and module.vnni:
            state[f"{name}.weight"] = unpack_linear_bf16(module.weight.detach())
    return state
