"""Pass: reorder the decoder layers' bf16 Linear weights into oneDNN's blocked layout (CPU only).

Measured on this project's AMX Xeon, Qwen3-0.6B shape: prefill +15-35% over plain `F.linear`, decode as fast
as the `mv` path. Run it last: passes that need dense weights (quantization, LoRA merging) go before it.
"""

from __future__ import annotations

import torch

from qwick.model.layers import Linear
from qwick.model.qwen3 import Qwen3ForCausalLM


def cpu_packing_supported(dtype: torch.dtype, device: torch.device) -> bool:
    return (device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack_linears_for_cpu(model: Qwen3ForCausalLM) -> int:
    """Pack every Linear inside the decoder layers (not lm_head: it is tied to the embedding). Returns the count."""
    packed = 0
    for module in model.model.layers.modules():
        if isinstance(module, Linear) and not module.weight.is_mkldnn:
            weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), 1)
            module.weight = torch.nn.Parameter(weight, requires_grad=False)
            packed += 1
    return packed


def dense_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with packed weights turned back into ordinary tensors (e.g. to hand them to transformers)."""
    return {k: v.to_dense() if v.is_mkldnn else v for k, v in model.state_dict().items()}
