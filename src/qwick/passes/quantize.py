"""The quantization pass: swap the projection Linears (and lm_head) for int8 or int4 weight-only modules."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.quant.int4 import Int4Linear
from qwick.quant.int8 import Int8Linear, attach_lm_head
from qwick.quant.options import DEFAULT_GROUP_SIZE, PROJECTIONS, check_group_size, validate_quantization


def projection_slots(model: Qwen3ForCausalLM) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, module) of every q/k/v/o/gate/up/down projection in the decoder layers."""
    return [(parent, name, getattr(parent, name)) for parent in model.model.layers.modules()
            for name in PROJECTIONS if isinstance(getattr(parent, name, None), nn.Module)]


def quantize_model(model: Qwen3ForCausalLM, method: str, group_size: int = DEFAULT_GROUP_SIZE, *,
                   lm_head: bool = True, kernel: str = "auto") -> int:
    """Replace every decoder projection (int8 or int4) and, with `lm_head`, the output projection (int8);
    returns how many decoder projections were replaced.

    lm_head is int8 per-channel in both modes, never int4: it maps straight to logits, where int4's error is
    most visible, and at 151936 x hidden it is a quarter of Qwen3-0.6B's weights, so int8 already halves the
    bytes every decode step reads (llama.cpp's Q4_0 makes the same call, with Q6_K). With tied embeddings the
    embedding lookup then reads the same int8 rows (Int8Embedding), so no float copy of the matrix remains;
    an untied embedding stays in the model dtype (a lookup reads one row per token: memory, not bandwidth).
    Norms stay float. int4 checks every layer before touching any (model untouched on error).
    Run before `pack_linears_for_cpu`: quantized modules are not `Linear`s, so packing skips them.
    """
    validate_quantization(method, group_size)
    targets = [slot for slot in projection_slots(model) if isinstance(slot[2], nn.Linear)]
    if method == "int4":
        check_group_size([linear.in_features for _, _, linear in targets], group_size)
    make: Callable[[nn.Linear], nn.Module] = (
        (lambda linear: Int8Linear.from_linear(linear, kernel)) if method == "int8"
        else (lambda linear: Int4Linear.from_linear(linear, group_size, kernel)))
    for parent, name, linear in targets:
        setattr(parent, name, make(linear))
    if lm_head and model.has_lm_head and isinstance(model.lm_head, nn.Linear):
        quantize_lm_head(model, kernel)
    return len(targets)


def quantize_lm_head(model: Qwen3ForCausalLM, kernel: str = "auto") -> None:
    dtype = model.model.norm.weight.dtype
    head = Int8Linear.from_linear(model.lm_head, kernel, out_dtype=torch.float32)
    attach_lm_head(model, head, dtype)
