"""The quantization pass: swap the decoder layers' projection Linears for int8 or int4 weight-only modules."""

from __future__ import annotations

from torch import nn

from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.quant.int4 import INT4_GROUP_SIZES, Int4Linear
from qwick.quant.int8 import Int8Linear

QUANTIZATION_METHODS = ("int8", "int4")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def validate_quantization(method: str | None, group_size: int = 128) -> None:
    """Raise a ValueError for an unknown method or int4 group size (call before loading any weights)."""
    if method is not None and method not in QUANTIZATION_METHODS:
        raise ValueError(f"quantization must be None, 'int8' or 'int4', got {method!r}")
    if method == "int4" and group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"int4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")


def quantize_model(model: Qwen3ForCausalLM, method: str, group_size: int = 128) -> int:
    """Replace every q/k/v/o/gate/up/down projection of the decoder layers; returns how many were replaced.

    Kept in the model dtype, by choice: the embedding, and lm_head (tied to the embedding in the small Qwen3
    models, so quantizing it would mean a second copy; it is also where quantization error hurts accuracy
    most, since it maps straight to logits). Norms stay float too.
    int4 needs every projection's in_features to be a multiple of `group_size`: the pass checks all layers
    first and raises (model untouched) rather than silently leaving some layers in float. Every Qwen3
    release has sizes that are multiples of 128.
    Activations stay in the model dtype, fp32 included: torch's kernels take fp32 (exact against the float
    reference), while bf16 is the fast path (int8 with fp32 activations: 8-10x slower in the project's notes,
    1.3x slower on its 2-core development VM), so pass dtype="bfloat16" for speed.
    Run before `pack_linears_for_cpu`: quantized modules are not `Linear`s, so packing skips them.
    """
    validate_quantization(method, group_size)
    targets = [(parent, name, getattr(parent, name)) for parent in model.model.layers.modules()
               for name in PROJECTIONS if isinstance(getattr(parent, name, None), nn.Linear)]
    if method == "int4":
        misfits = sorted({linear.in_features for _, _, linear in targets if linear.in_features % group_size})
        if misfits:
            fitting = [g for g in INT4_GROUP_SIZES if all(t[2].in_features % g == 0 for t in targets)]
            hint = f"use group_size in {fitting}" if fitting else "use int8 for this model"
            raise ValueError(f"int4 group_size {group_size} does not divide the in_features {misfits} of some "
                             f"projections: {hint}")
    for parent, name, linear in targets:
        quantized = Int8Linear.from_linear(linear) if method == "int8" else Int4Linear.from_linear(linear, group_size)
        setattr(parent, name, quantized)
    return len(targets)
