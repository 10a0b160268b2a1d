"""`qwick merge`: fold a peft LoRA adapter into its base model and save a complete checkpoint.

peft does the merge (W + B·A·scale) in float32; the result is cast to the base checkpoint's dtype (or --dtype)
and saved by transformers with the base's tokenizer and generation files, so qwick.LLM and transformers load it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qwick.device import resolve_dtype
from qwick.model.hub import resolve_model_path
from qwick.train.extra import require_train_extra
from qwick.train.model import check_out_dir, load_causal_lm, quiet_peft, save_full, source_dtype


def merge(model: str, adapter: str | Path, out: str | Path, dtype: str = "auto") -> Path:
    """Write BASE+ADAPTER merged into `out`; returns `out`."""
    require_train_extra("qwick merge")
    import peft

    adapter, out = Path(adapter), Path(out)
    check_out_dir(out)
    _check_adapter(adapter)
    folder = resolve_model_path(model)
    target = (source_dtype(folder) or torch.float32) if dtype == "auto" else resolve_dtype(dtype, torch.device("cpu"), None)
    base = load_causal_lm(folder, torch.float32, torch.device("cpu"))
    try:
        with quiet_peft():
            merged = peft.PeftModel.from_pretrained(base, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = next((line for line in lines if "size mismatch" in line), lines[0])  # torch lists them all
        raise ValueError(f"adapter {adapter} does not fit the model {model}: {detail}") from exc
    save_full(merged, out, folder, target)
    return out


def _check_adapter(adapter: Path) -> None:
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{adapter} is not a peft adapter folder: it has no adapter_config.json")
    if not (adapter / "adapter_model.safetensors").is_file() and not (adapter / "adapter_model.bin").is_file():
        raise FileNotFoundError(f"{adapter} has no adapter_model.safetensors")
    peft_type = json.loads(config.read_text(encoding="utf-8")).get("peft_type")
    if peft_type != "LORA":
        raise ValueError(f"{config}: peft_type is {peft_type!r}; qwick merge handles LoRA adapters only")
