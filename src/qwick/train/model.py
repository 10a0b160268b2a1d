"""The model being trained: a transformers `AutoModelForCausalLM`, optionally wrapped in a peft LoRA (or QLoRA).

Training runs on transformers' module rather than qwick's inference module: autograd, peft and Trainer expect it,
and both share Hugging Face parameter names, so what is saved here loads in qwick, transformers and peft alike.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qwick.device import resolve_dtype
from qwick.model.loader import load_config

QWEN3_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Files besides the weights and config.json that make a model folder usable for inference.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "vocab.json", "merges.txt",
              "special_tokens_map.json", "added_tokens.json", "generation_config.json")


@dataclass
class LoraSettings:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = QWEN3_LINEARS

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ValueError(f"--lora-r must be >= 1 and --lora-alpha > 0, got r={self.r}, alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--lora-dropout must be in [0, 1), got {self.dropout}")
        unknown = [m for m in self.target_modules if m not in QWEN3_LINEARS]
        if unknown or not self.target_modules:
            raise ValueError(f"--target-modules: unknown module(s) {', '.join(unknown) or '(none given)'}; "
                             f"Qwen3's linear layers are {','.join(QWEN3_LINEARS)}")


@dataclass(frozen=True)
class Precision:
    weights: torch.dtype  # dtype the weights are loaded in
    autocast_bf16: bool  # compute in bf16 over float32 weights


def choose_precision(dtype: str, device: torch.device, folder: Path, *, full: bool) -> Precision:
    """LoRA: frozen weights in the compute dtype (peft keeps adapters in float32). Full training: float32 weights,
    bf16 by autocast, because pure-bf16 weights drop the small updates Adam makes."""
    compute = resolve_dtype(dtype, device, load_config(folder).torch_dtype)
    if not full or compute == torch.float32:
        return Precision(compute, False)
    if compute == torch.float16:
        raise ValueError("full-weight training in float16 is not supported; use --dtype bfloat16 or float32")
    return Precision(torch.float32, True)


def load_causal_lm(folder: Path, dtype: torch.dtype, device: torch.device, *, qlora: bool = False) -> Any:
    """transformers' model for `folder` (on CPU; Trainer moves it), or 4-bit NF4 on the GPU for QLoRA."""
    import transformers

    kwargs: dict[str, Any] = {"dtype": dtype}
    if qlora:
        kwargs["quantization_config"] = _nf4_config(dtype, device)
        kwargs["device_map"] = {"": device.index or 0}
    return transformers.AutoModelForCausalLM.from_pretrained(folder, **kwargs)


def check_qlora(device: torch.device) -> None:
    """QLoRA's requirements, checked before any data or weights are loaded."""
    if device.type != "cuda":
        raise ValueError("--qlora needs a CUDA GPU: bitsandbytes' 4-bit NF4 kernels do not run on CPU here. "
                         "Drop --qlora to train a plain LoRA (same adapter format) or pass --device cuda on a GPU")
    try:
        import bitsandbytes  # noqa: F401 - checked here so the error names the package
    except ImportError:
        raise ValueError("--qlora needs bitsandbytes: pip install bitsandbytes (CUDA only)") from None


def _nf4_config(dtype: torch.dtype, device: torch.device) -> Any:
    import transformers

    check_qlora(device)

    return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)


def add_lora(model: Any, lora: LoraSettings, base_name: str, *, qlora: bool = False) -> Any:
    """Wrap `model` in a peft LoRA; only the adapters train. `base_name` goes into adapter_config.json."""
    import peft

    if qlora:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                             target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    with quiet_peft():
        wrapped = peft.get_peft_model(model, config)
    wrapped.peft_config["default"].base_model_name_or_path = base_name
    return wrapped


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft 0.21 reads a property transformers 5 deprecated; its FutureWarning is noise to our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def save_full(model: Any, out: Path, source: Path, dtype: torch.dtype | None = None) -> None:
    """A complete model folder: safetensors + config.json (+ the source's tokenizer and generation files)."""
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    copy_side_files(source, out)


def source_dtype(folder: Path) -> torch.dtype | None:
    """The checkpoint's own dtype (a full-weight result is saved like its source), or None if unknown."""
    name = load_config(folder).torch_dtype
    return getattr(torch, name) if name in ("float32", "bfloat16", "float16") else None


def copy_side_files(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, dest / name)


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder to write into")
