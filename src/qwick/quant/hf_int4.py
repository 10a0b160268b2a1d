"""GPTQ and AWQ 4-bit checkpoints (Hugging Face `quant_method: gptq | awq`) loaded onto qwick's Int4Linear.

Both store, per projection X ([N out, K in] as a Linear) with groups of g input columns,
w[n, k] = (q[k, n] - z[k // g, n]) * s[k // g, n], q and z 4-bit, s float16 [K/g, N]:
  GPTQ (AutoGPTQ / optimum, checkpoint_format "gptq"): X.qweight int32 [K/8, N], 8 consecutive input rows per
    word (row 8i+j in bits 4j..4j+3); X.qzeros int32 [K/g, N/8], 8 consecutive columns per word, stored as
    z - 1 ("gptq_v2" stores z); X.scales; X.g_idx int32 [K] = k // g without act-order. Act-order
    (desc_act: true, a permuted g_idx) is refused by name.
  AWQ GEMM (AutoAWQ WQLinear_GEMM): X.qweight int32 [K, N/8] and X.qzeros int32 [K/g, N/8], 8 columns per
    word in the order [0, 2, 4, 6, 1, 3, 5, 7]; X.scales. Other AWQ layouts (gemv, exllama, marlin) are refused.
qwick's int4 is w = q * scale + min: scale = s, min = -z * s, so q and s carry over exactly and min is -z * s
rounded to float16 (what every int4 kernel reads), within half a float16 ulp of z * s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qwick.model.config import Qwen3Config
from qwick.model.loader import (
    CheckpointError,
    Tensors,
    Transform,
    build_model,
    checkpoint_files,
    load_weights,
)
from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.quant.checkpoint import QuantSpec
from qwick.quant.int4 import Int4Linear
from qwick.quant.options import INT4_GROUP_SIZES
from qwick.quant.qwick_format import quantized_skeleton, release_freed_memory

SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]  # nibble index holding column c of each 8-column word


@dataclass(frozen=True)
class HFInt4Spec:
    method: str  # "gptq" | "awq"
    group_size: int
    zero_offset: int  # added to stored zeros: 1 for GPTQ's original format

    @property
    def parts(self) -> tuple[str, ...]:
        return ("qweight", "qzeros", "scales", "g_idx") if self.method == "gptq" else ("qweight", "qzeros", "scales")


def hf_int4_spec(raw: dict[str, Any]) -> HFInt4Spec | None:
    """The GPTQ/AWQ settings of a config.json, None for other checkpoints; unsupported variants raise, named."""
    quant = raw.get("quantization_config") or {}
    method = quant.get("quant_method")
    if method not in ("gptq", "awq"):
        return None
    bits = quant.get("bits", quant.get("w_bit"))
    group = quant.get("group_size", quant.get("q_group_size"))
    if bits != 4:
        raise CheckpointError(f"{method} checkpoint with bits={bits!r}: qwick loads 4-bit GPTQ/AWQ only")
    if group not in INT4_GROUP_SIZES:
        raise CheckpointError(f"{method} checkpoint with group_size={group!r}: qwick's int4 takes group sizes "
                              f"{INT4_GROUP_SIZES}")
    skipped = [m for m in quant.get("modules_to_not_convert") or [] if m != "lm_head"]
    if skipped:
        raise CheckpointError(f"{method} checkpoint with modules_to_not_convert={skipped}: not supported")
    if method == "gptq":
        if quant.get("desc_act"):
            raise CheckpointError("GPTQ checkpoint with desc_act=true (act-order) is not supported: qwick's int4 "
                                  "groups consecutive columns; quantize with desc_act=false")
        fmt = quant.get("checkpoint_format", "gptq")
        if fmt not in ("gptq", "gptq_v2"):
            raise CheckpointError(f"GPTQ checkpoint_format {fmt!r} is not supported (gptq, gptq_v2)")
        return HFInt4Spec("gptq", group, 1 if fmt == "gptq" else 0)
    version = str(quant.get("version", "gemm")).lower()
    if version != "gemm":
        raise CheckpointError(f"AWQ version {version!r} is not supported: qwick reads the GEMM layout")
    if quant.get("zero_point") is False:
        raise CheckpointError("AWQ checkpoint with zero_point=false is not supported")
    return HFInt4Spec("awq", group, 0)


def unpack(parts: dict[str, torch.Tensor], spec: HFInt4Spec, name: str) -> tuple[torch.Tensor, ...]:
    """One projection's stored tensors -> (q uint8 [N, K], scale float32 [N, K/g], zero float32 [N, K/g])."""
    qweight, qzeros, scales = parts["qweight"].int(), parts["qzeros"].int(), parts["scales"].float()
    if spec.method == "gptq":
        q = ((qweight[:, None, :] >> SHIFTS[None, :, None]) & 15).reshape(-1, qweight.shape[1])  # [K, N]
        z = ((qzeros[:, :, None] >> SHIFTS) & 15).reshape(qzeros.shape[0], -1)  # [K/g, N]
        expected = torch.arange(q.shape[0], dtype=torch.int32) // spec.group_size
        if not torch.equal(parts["g_idx"].int(), expected):
            raise CheckpointError(f"{name}.g_idx is not sequential (act-order / desc_act): not supported")
    else:
        q = ((qweight[:, :, None] >> SHIFTS) & 15)[:, :, AWQ_REVERSE_ORDER].reshape(qweight.shape[0], -1)
        z = ((qzeros[:, :, None] >> SHIFTS) & 15)[:, :, AWQ_REVERSE_ORDER].reshape(qzeros.shape[0], -1)
    z = z + spec.zero_offset
    if scales.shape != z.shape or q.shape[0] != scales.shape[0] * spec.group_size or q.shape[1] != scales.shape[1]:
        raise CheckpointError(f"{name}: qweight {tuple(qweight.shape)}, qzeros {tuple(qzeros.shape)} and scales "
                              f"{tuple(scales.shape)} do not fit together with group size {spec.group_size}")
    return q.t().to(torch.uint8).contiguous(), scales.t().contiguous(), z.t().float().contiguous()


def dequantize(parts: dict[str, torch.Tensor], spec: HFInt4Spec, name: str) -> torch.Tensor:
    """The reference: float32 [N, K] = (q - z) * s, per group."""
    q, scale, zero = unpack(parts, spec, name)
    g = spec.group_size
    return ((q.float().view(q.shape[0], -1, g) - zero[..., None]) * scale[..., None]).view(q.shape)


def hf_int4_tensors(spec: HFInt4Spec, emit: Any) -> Transform:
    """A loader transform that groups each projection's stored tensors and yields `emit(name, parts)`'s
    (name, tensor) pairs in their place; other tensors pass unchanged."""

    def transform(tensors: Tensors) -> Tensors:
        pending: dict[str, dict[str, torch.Tensor]] = {}
        for raw_name, tensor in tensors:
            stem, _, part = raw_name.rpartition(".")
            if part not in spec.parts:
                if part == "bias" and stem.endswith("_proj"):
                    raise CheckpointError(f"{raw_name}: projection biases are not part of Qwen3")
                yield raw_name, tensor
                continue
            parts = pending.setdefault(stem, {})
            parts[part] = tensor
            if len(parts) == len(spec.parts):
                yield from emit(stem, pending.pop(stem))
        if pending:
            stem = sorted(pending)[0]
            missing = sorted(set(spec.parts) - set(pending[stem]))
            raise CheckpointError(f"{spec.method} checkpoint: {stem} has no {', '.join(missing)}")

    return transform


def dequantized_hf_int4(spec: HFInt4Spec) -> Transform:
    """GPTQ/AWQ projections as float32 weights (for `qwick export`)."""
    return hf_int4_tensors(spec, lambda stem, parts: [(f"{stem}.weight", dequantize(parts, spec, stem))])


def load_hf_int4(folder: Path, config: Qwen3Config, spec: HFInt4Spec, dtype: torch.dtype, device: torch.device,
                 kernel: str = "auto") -> Qwen3ForCausalLM:
    """The model with every projection an Int4Linear holding the checkpoint's codes, scales and zero points."""
    model = build_model(config, dtype, device, quantized_skeleton(QuantSpec("int4", spec.group_size, False), dtype,
                                                                  device, kernel))
    modules = {name: m for name, m in model.named_modules() if isinstance(m, Int4Linear)}

    def emit(stem: str, parts: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        if stem not in modules:
            raise CheckpointError(f"{spec.method} checkpoint: {stem} is not a Qwen3 projection")
        q, scale, zero = unpack(parts, spec, stem)
        module = modules[stem]
        if tuple(q.shape) != (module.out_features, module.in_features):
            raise CheckpointError(f"{stem}: holds a {tuple(q.shape)} weight, the config implies "
                                  f"{(module.out_features, module.in_features)}")
        buffers = module.layout_buffers(q.to(device), scale.to(device), (-zero * scale).to(device))
        return [(f"{stem}.{buffer}", value) for buffer, value in buffers.items()]

    load_weights(model, checkpoint_files(folder), [hf_int4_tensors(spec, emit)])
    release_freed_memory()
    return model
