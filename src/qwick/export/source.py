"""The model to export, in float32 on the CPU: a Hugging Face folder (float, FP8, GPTQ or AWQ), a
qwick-quantized folder (dequantized: w = q * scale + min), optionally with a PEFT LoRA adapter merged in (W + scale * B @ A)."""

from __future__ import annotations

from pathlib import Path

import torch

from qwick.lora.adapter import load_adapter
from qwick.lora.request import LoRARequest
from qwick.model.config import Qwen3Config
from qwick.model.hub import resolve_model_path
from qwick.model.loader import Tensors, Transform, build_model, checkpoint_files, load_config, load_weights
from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.quant.checkpoint import QuantSpec, checkpoint_transforms
from qwick.quant.hf_int4 import dequantized_hf_int4, hf_int4_spec
from qwick.quant.int4 import dequantize_int4
from qwick.quant.layout import unpack_nibbles
from qwick.quant.options import DEFAULT_GROUP_SIZE

_INT4_PARTS = ("weight_packed", "weight_scale", "weight_min")


def load_for_export(model: str | Path, adapter: str | Path | None = None) -> tuple[Path, Qwen3Config, Qwen3ForCausalLM]:
    """(folder, config, float32 model) of `model`, with `adapter` merged when given."""
    folder = resolve_model_path(model)
    if folder.is_file():
        raise ValueError(f"{folder} is already a GGUF file: export from the Hugging Face or qwick folder instead")
    config = load_config(folder)
    spec = QuantSpec.from_config(config.raw)
    hf_int4 = hf_int4_spec(config.raw)
    if spec is not None:
        transforms = [dequantized_qwick(config, spec)]
    elif hf_int4 is not None:  # GPTQ / AWQ
        transforms = [dequantized_hf_int4(hf_int4)]
    else:
        transforms = checkpoint_transforms(config.raw)
    net = build_model(config, torch.float32, torch.device("cpu"))
    load_weights(net, checkpoint_files(folder), transforms)
    if adapter is not None:
        merge_adapter(net, Path(adapter))
    return folder, config, net


def dequantized_qwick(config: Qwen3Config, spec: QuantSpec) -> Transform:
    """The loader transform of a qwick-quantized folder (quant/checkpoint.py's format) back to float weights."""

    def transform(tensors: Tensors) -> Tensors:
        pending: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in tensors:
            stem, _, part = name.rpartition(".")
            int8 = part == "weight" and tensor.dtype == torch.int8
            if part not in _INT4_PARTS and not int8:
                yield name, tensor
                continue
            parts = pending.setdefault(stem, {})
            parts[part] = tensor
            if "weight" in parts and "weight_scale" in parts:  # int8: w = q * scale[row]
                yield _weight_name(stem, config), parts["weight"].float() * parts["weight_scale"].float()[:, None]
                del pending[stem]
            elif all(p in parts for p in _INT4_PARTS):
                in_features = parts["weight_scale"].shape[1] * (spec.group_size or DEFAULT_GROUP_SIZE)
                q = unpack_nibbles(parts["weight_packed"], in_features)  # [N, K]
                yield _weight_name(stem, config), dequantize_int4(q, parts["weight_scale"], parts["weight_min"])
                del pending[stem]
        if pending:
            stem = sorted(pending)[0]
            raise ValueError(f"quantized checkpoint: {stem} is incomplete (has only {sorted(pending[stem])})")

    return transform


def _weight_name(stem: str, config: Qwen3Config) -> str:
    # a tied model's quantized lm_head is also its embedding (the folder stores no embed_tokens)
    if stem == "lm_head" and config.tie_word_embeddings:
        return "model.embed_tokens.weight"
    return f"{stem}.weight"


def merge_adapter(model: Qwen3ForCausalLM, adapter: Path) -> None:
    """W += (scale * B) @ A for every projection the adapter targets (the adapter is checked by qwick.lora)."""
    linears = {name: m for name, m in model.named_modules() if name.split(".")[-1].endswith("_proj")}
    shapes = {name: (m.in_features, m.out_features) for name, m in linears.items()}
    loaded = load_adapter(LoRARequest("export", 1, str(adapter)), shapes, max_rank=1 << 16)
    with torch.no_grad():
        for name, (a, scaled_b) in loaded.modules.items():
            linears[name].weight += scaled_b.float() @ a.float()  # [out, r] @ [r, in]
