"""Reading Qwen's FP8 releases (e.g. Qwen/Qwen3-0.6B-FP8): block-wise float8_e4m3 weights, dequantized on load.

Their config.json carries `"quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
"weight_block_size": [128, 128], ...}`; each quantized Linear has `X.weight` (float8_e4m3fn [N, K]) and
`X.weight_scale_inv` (float32 [ceil(N/128), ceil(K/128)]) with w = weight * scale_inv of its block (the name
is DeepSeek's; the value multiplies). qwick has no fp8 matmul on CPU, so the weights are dequantized to the
model dtype at load; `quantization="int8" | "int4"` then requantizes them like any float checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch

from qwick.model.loader import CheckpointError, Tensors, Transform

SCALE_SUFFIX = "_scale_inv"


def fp8_block_size(raw_config: dict[str, Any]) -> tuple[int, int] | None:
    """(rows, cols) of an FP8 checkpoint's scaling blocks, or None when the checkpoint is not FP8."""
    quant = raw_config.get("quantization_config") or {}
    if quant.get("quant_method") != "fp8":
        return None
    if quant.get("fmt", "e4m3") != "e4m3" or quant.get("activation_scheme", "dynamic") != "dynamic":
        raise ValueError(f"unsupported fp8 checkpoint ({quant}): qwick reads e4m3 weights with dynamic activations")
    block = quant.get("weight_block_size")
    if not (isinstance(block, list) and len(block) == 2):
        raise ValueError(f"fp8 checkpoint without a 2-d weight_block_size ({quant}): per-tensor fp8 is not supported")
    return int(block[0]), int(block[1])


def dequantize_fp8(weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """float8 [N, K] and scales [ceil(N/bn), ceil(K/bk)] -> float32 [N, K]."""
    n, k = weight.shape
    scales = scale_inv.float().repeat_interleave(block[0], dim=0)[:n].repeat_interleave(block[1], dim=1)[:, :k]
    return weight.float() * scales


def fp8_weights(block: tuple[int, int]) -> Transform:
    """The loader transform of an FP8 checkpoint: every fp8 weight dequantized to float32 with its scale folded
    in (its `_scale_inv` tensor is consumed); other tensors pass unchanged."""

    def transform(tensors: Tensors) -> Tensors:
        weights: dict[str, torch.Tensor] = {}  # fp8 weights waiting for their scale...
        scales: dict[str, torch.Tensor] = {}  # ...and scales waiting for their weight (files list names sorted)
        for name, tensor in tensors:
            if name.endswith(SCALE_SUFFIX):
                weight = name.removesuffix(SCALE_SUFFIX)
                if weight in weights:
                    yield weight, dequantize_fp8(weights.pop(weight), tensor, block)
                else:
                    scales[weight] = tensor
            elif tensor.dtype == torch.float8_e4m3fn:
                if name in scales:
                    yield name, dequantize_fp8(tensor, scales.pop(name), block)
                else:
                    weights[name] = tensor
            else:
                yield name, tensor
        if weights:
            name = sorted(weights)[0]
            raise CheckpointError(f"fp8 tensor {name!r} has no {name + SCALE_SUFFIX!r} in the checkpoint")

    return transform
