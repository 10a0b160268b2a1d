"""Reading a PEFT LoRA adapter folder: validate `adapter_config.json`, load and check its tensors.

Supported: `r`, `lora_alpha`, `use_rslora`, `target_modules` within q/k/v/o/gate/up/down_proj of the decoder
layers (any subset, any layers). Everything that changes what the adapter computes beyond that (DoRA, biases,
`modules_to_save`, embedding or lm_head LoRA, per-module rank/alpha patterns, other PEFT variants) is refused
with the field's name, never ignored.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from qwick.lora.layers import PROJECTIONS
from qwick.lora.request import LoRARequest

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# base_model.model.model.layers... (a CausalLM adapter) or base_model.model.layers... (trained on the bare Qwen3Model)
_KEY = re.compile(r"^(?:base_model\.model\.)?(?:model\.)?(layers\.\d+\.(?:self_attn|mlp)\.(\w+))\.lora_([AB])\.weight$")
# config fields whose non-default value changes the computation in ways qwick does not implement
_UNSUPPORTED_FLAGS = {
    "use_dora": "DoRA (weight-decomposed LoRA)",
    "lora_bias": "LoRA biases (lora_bias)",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D-style weights)",
    "use_qalora": "QA-LoRA",
    "use_bdlora": "BD-LoRA",
}
_UNSUPPORTED_SETTINGS = {
    "modules_to_save": "modules_to_save (fully trained extra modules)",
    "rank_pattern": "per-module ranks (rank_pattern)",
    "alpha_pattern": "per-module alphas (alpha_pattern)",
    "layer_replication": "layer_replication",
    "trainable_token_indices": "trainable token embeddings (trainable_token_indices)",
    "target_parameters": "LoRA on parameters (target_parameters)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "velora_config": "VeLoRA (velora_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
    "arrow_config": "Arrow routing (arrow_config)",
    "kasa_config": "KaSA (kasa_config)",
}
_EMBEDDING_MODULES = ("embed_tokens", "lm_head")


class LoRAAdapterError(ValueError):
    """The adapter folder cannot be served: says which field or tensor, what was expected, and how to fix it."""


@dataclass
class LoRAAdapter:
    request: LoRARequest
    rank: int
    scaling: float  # lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora; already folded into `modules`
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "model.layers.0.self_attn.q_proj" -> (A [r, in], sB [out, r])


def load_adapter(request: LoRARequest, shapes: dict[str, tuple[int, int]], max_rank: int) -> LoRAAdapter:
    """Read `request.lora_path`; `shapes` maps each projection of the base model to (in_features, out_features)."""
    folder = Path(request.lora_path)
    where = f"LoRA adapter {request.lora_name!r} ({folder})"
    config = _read_config(folder, where)
    rank, scaling = _check_config(config, where, max_rank)
    tensors = _read_tensors(folder, where)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise LoRAAdapterError(f"{where}: unsupported tensor {key!r}: {_explain_key(key)}")
        module, projection, which = match.groups()
        module = f"model.{module}"
        if projection not in PROJECTIONS:
            raise LoRAAdapterError(f"{where}: tensor {key!r} targets {projection!r}; qwick serves LoRA on "
                                   f"{', '.join(PROJECTIONS)} only")
        if module not in shapes:
            layers = len({name.split(".")[2] for name in shapes})
            raise LoRAAdapterError(f"{where}: tensor {key!r} targets {module}, which the base model does not have "
                                   f"(it has {layers} layers): the adapter was trained for another model")
        pairs.setdefault(module, {})[which] = tensor
    if not pairs:
        raise LoRAAdapterError(f"{where}: {WEIGHTS_FILE} holds no lora_A/lora_B tensors")
    modules = {}
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise LoRAAdapterError(f"{where}: {module} has no {missing}.weight tensor (the file is incomplete)")
        modules[module] = _check_pair(module, pair["A"], pair["B"], shapes[module], rank, scaling, where)
    return LoRAAdapter(request, rank, scaling, modules)


def read_rank(path: str | Path) -> int:
    """The adapter's `r` from its config (to size max_lora_rank before loading)."""
    folder = Path(path)
    rank = _read_config(folder, f"LoRA adapter at {folder}").get("r")
    if not isinstance(rank, int) or rank < 1:
        raise LoRAAdapterError(f"{folder / CONFIG_FILE}: 'r' must be a positive integer, got {rank!r}")
    return rank


def _read_config(folder: Path, where: str) -> dict[str, Any]:
    if not folder.is_dir():
        raise LoRAAdapterError(f"{where}: no such folder: pass the folder holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise LoRAAdapterError(f"{where}: {CONFIG_FILE} is missing: is this a PEFT adapter folder "
                               "(peft's save_pretrained writes it)?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LoRAAdapterError(f"{where}: {CONFIG_FILE} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise LoRAAdapterError(f"{where}: {CONFIG_FILE} must hold a JSON object")
    return config


def _check_config(config: dict[str, Any], where: str, max_rank: int) -> tuple[int, float]:
    """(rank, scaling) after refusing every unsupported setting by name."""
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise LoRAAdapterError(f"{where}: peft_type is {peft_type!r}; only 'LORA' adapters are supported")
    for name, what in _UNSUPPORTED_FLAGS.items():
        if config.get(name):
            raise LoRAAdapterError(f"{where}: {what} is not supported ({name}={config[name]!r} in {CONFIG_FILE})")
    for name, what in _UNSUPPORTED_SETTINGS.items():
        if config.get(name):
            raise LoRAAdapterError(f"{where}: {what} is not supported ({name} is set in {CONFIG_FILE})")
    bias = config.get("bias", "none")
    if bias != "none":
        raise LoRAAdapterError(f"{where}: bias={bias!r} is not supported (trained biases); only bias='none'")
    _check_targets(config.get("target_modules"), where)
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise LoRAAdapterError(f"{where}: 'r' must be a positive integer, got {rank!r}")
    if rank > max_rank:
        raise LoRAAdapterError(f"{where}: its rank r={rank} exceeds max_lora_rank={max_rank}: raise max_lora_rank "
                               f"(LLM(max_lora_rank=...), qwick serve --max-lora-rank) to at least {rank}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool):
        raise LoRAAdapterError(f"{where}: 'lora_alpha' must be a number, got {alpha!r}")
    use_rslora = config.get("use_rslora", False)
    return rank, alpha / (math.sqrt(rank) if use_rslora else rank)


def _check_targets(targets: Any, where: str) -> None:
    if targets is None or isinstance(targets, str):  # "all-linear" or a regex: the tensors say what is targeted
        return
    for target in targets:
        name = str(target).rsplit(".", 1)[-1]
        if name in _EMBEDDING_MODULES:
            raise LoRAAdapterError(f"{where}: LoRA on {name} (target_modules) is not supported: only the decoder "
                                   f"projections {', '.join(PROJECTIONS)}")
        if name not in PROJECTIONS:
            raise LoRAAdapterError(f"{where}: target_modules holds {target!r}; qwick serves LoRA on "
                                   f"{', '.join(PROJECTIONS)} only")


def _read_tensors(folder: Path, where: str) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        hint = (" (adapter_model.bin is the old pickle format: re-save with peft's save_pretrained, which writes "
                "safetensors)") if (folder / "adapter_model.bin").is_file() else ""
        raise LoRAAdapterError(f"{where}: {WEIGHTS_FILE} is missing{hint}")
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise LoRAAdapterError(f"{where}: cannot read {WEIGHTS_FILE}: {exc}") from None


def _check_pair(module: str, a: torch.Tensor, b: torch.Tensor, shape: tuple[int, int], rank: int,
                scaling: float, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    in_features, out_features = shape
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
        raise LoRAAdapterError(f"{where}: {module} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}; "
                               "expected [r, in_features] and [out_features, r]")
    if a.shape[0] != rank:
        raise LoRAAdapterError(f"{where}: {module} has rank {a.shape[0]} but the config says r={rank}")
    if a.shape[1] != in_features or b.shape[0] != out_features:
        raise LoRAAdapterError(
            f"{where}: {module} maps {a.shape[1]} -> {b.shape[0]} features but the base model's projection maps "
            f"{in_features} -> {out_features}: the adapter was trained for another model")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise LoRAAdapterError(f"{where}: {module} holds {a.dtype}/{b.dtype} tensors; expected floating point")
    return a, b.float() * scaling  # scale in float32, cast to the model dtype when copied into a slot


def _explain_key(key: str) -> str:
    if "lora_embedding" in key or any(f".{m}." in key for m in _EMBEDDING_MODULES):
        return "LoRA on the embedding or lm_head is not supported"
    if "lora_magnitude_vector" in key:
        return "DoRA is not supported"
    if key.endswith(".bias"):
        return "LoRA biases are not supported"
    return ("expected PEFT LoRA names like base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight "
            "(modules_to_save and other extra weights are not supported)")
