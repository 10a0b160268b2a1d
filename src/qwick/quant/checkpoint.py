"""Quantized safetensors checkpoints: `qwick quantize` writes them, quant/qwick_format.py reads them back
(passes/load.py picks it by config.json).

Format (a Hugging Face folder; config.json gains `"quantization_config": {"quant_method": "qwick", ...}`):
  int8 projection X:  X.weight int8 [N, K], X.weight_scale float32 [N];  w = weight * scale[n]
  int4 projection X:  X.weight_packed uint8 [N, ceil(K/2)] (column 2j in the low nibble of byte j),
                      X.weight_scale and X.weight_min float16 [N, K/group];  w = q * scale + min, q in 0..15
  lm_head (int8, when quantized): lm_head.weight + lm_head.weight_scale; a tied model stores no
                      model.embed_tokens.weight, its embedding is read from these int8 rows
  everything else (norms, an untied embedding) in the source dtype.
Loading (quant/qwick_format.py) builds the model with empty quantized modules and fills it through the one
loader, with a transform from these tensors to the modules' buffers (no float copy of the weights ever exists).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from qwick.model.config import Qwen3Config
from qwick.model.loader import CheckpointError, Transform, build_model, checkpoint_files, load_weights
from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.quant.fp8 import fp8_block_size, fp8_weights
from qwick.quant.int4 import quantize_int4
from qwick.quant.int8 import quantize_int8
from qwick.quant.layout import pack_nibbles
from qwick.quant.options import DEFAULT_GROUP_SIZE, PROJECTIONS, check_group_size, validate_quantization

QUANT_METHOD = "qwick"


@dataclass(frozen=True)
class QuantSpec:
    """What a quantized checkpoint holds (config.json's quantization_config)."""

    method: str  # "int8" | "int4"
    group_size: int | None  # int4 only
    lm_head: bool

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> QuantSpec | None:
        quant = raw.get("quantization_config") or {}
        if quant.get("quant_method") != QUANT_METHOD:
            return None
        spec = cls(quant.get("method", ""), quant.get("group_size"), bool(quant.get("lm_head", False)))
        try:
            validate_quantization(spec.method, spec.group_size or DEFAULT_GROUP_SIZE)
        except ValueError as exc:
            raise CheckpointError(f"config.json quantization_config is not a valid qwick one: {exc}") from exc
        return spec

    def to_config(self) -> dict[str, Any]:
        return {"quant_method": QUANT_METHOD, "method": self.method, "group_size": self.group_size,
                "lm_head": self.lm_head, "format_version": 1}


def is_projection(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in PROJECTIONS and ".layers." in name


def quantized_tensors(name: str, weight: torch.Tensor, spec: QuantSpec) -> dict[str, torch.Tensor]:
    """One float weight [N, K] -> the checkpoint tensors that replace it (see the module docstring)."""
    stem = name.removesuffix(".weight")
    if spec.method == "int4" and name != "lm_head.weight":
        q, scale, mins = quantize_int4(weight, spec.group_size or DEFAULT_GROUP_SIZE)
        return {f"{stem}.weight_packed": pack_nibbles(q), f"{stem}.weight_scale": scale, f"{stem}.weight_min": mins}
    q, scales = quantize_int8(weight)
    return {f"{stem}.weight": q, f"{stem}.weight_scale": scales}


def save_quantized(source: Path, out: Path, method: str, group_size: int = DEFAULT_GROUP_SIZE, *,
                   lm_head: bool = True) -> QuantSpec:
    """Quantize the float (or FP8) checkpoint in `source` into a new folder `out` (one model.safetensors)."""
    validate_quantization(method, group_size)
    raw = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config = Qwen3Config.from_dict(raw, str(source / "config.json"))
    if QuantSpec.from_config(raw) is not None:
        raise ValueError(f"{source} is already quantized by qwick ({raw['quantization_config']}): quantize the "
                         "float checkpoint instead")
    model = build_model(config, _source_dtype(raw), torch.device("cpu"))
    load_float(model, source, raw)
    lm_head = lm_head and model.has_lm_head  # a Qwen3Model backbone has none to quantize
    spec = QuantSpec(method, group_size if method == "int4" else None, lm_head)
    if method == "int4":
        check_group_size([m.in_features for name, m in model.named_modules() if is_projection(name + ".weight")],
                         group_size)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tied_embedding = name == "model.embed_tokens.weight" and config.tie_word_embeddings
        if tied_embedding and lm_head:
            continue  # served from lm_head's int8 rows
        if name == "lm_head.weight" and ((config.tie_word_embeddings and not lm_head) or not model.has_lm_head):
            continue  # the float embedding is the head, or there is no head
        if is_projection(name) or (name == "lm_head.weight" and lm_head):
            tensors.update(quantized_tensors(name, tensor, spec))
        else:
            tensors[name] = tensor.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt", "quantization": method})
    for item in source.iterdir():  # tokenizer, generation config, chat template...
        if item.is_file() and item.suffix not in (".safetensors", ".bin", ".pt", ".pth") and \
                item.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy(item, out / item.name)
    raw["quantization_config"] = spec.to_config()
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return spec


def check_matches(stored: QuantSpec, quantization: str | None, group_size: int | None, folder: Path) -> None:
    if quantization is not None and quantization != stored.method:
        raise ValueError(f"{folder} is already quantized as {stored.method}; quantization={quantization!r} does not "
                         f"match (pass quantization=None or {stored.method!r}, or quantize the float checkpoint)")
    if group_size is not None and stored.method == "int4" and group_size != stored.group_size:
        raise ValueError(f"{folder} is quantized as int4 with group size {stored.group_size}, not {group_size}: "
                         "drop the group size or re-quantize the float checkpoint with it")


def checkpoint_transforms(raw: dict[str, Any]) -> list[Transform]:
    """The loader transforms a float checkpoint's config.json asks for: FP8 releases are dequantized on load."""
    block = fp8_block_size(raw)
    return [] if block is None else [fp8_weights(block)]


def load_float(model: Qwen3ForCausalLM, folder: Path, raw: dict[str, Any]) -> None:
    """A float or FP8 checkpoint's weights into `model` (model/loader.py, with the transforms its config asks)."""
    load_weights(model, checkpoint_files(folder), checkpoint_transforms(raw))


def _source_dtype(raw: dict[str, Any]) -> torch.dtype:
    # quantize from the published precision (bf16 for Qwen3): what LLM(quantization=...) would quantize too
    name = raw.get("torch_dtype") or raw.get("dtype") or "bfloat16"
    return {"float32": torch.float32, "float16": torch.float16}.get(str(name), torch.bfloat16)
