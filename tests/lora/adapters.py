"""Builders for PEFT LoRA adapters of the tiny test checkpoints, written by `peft` itself (the reference)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peft
import torch
import transformers

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_adapter(base_dir: Path, dest: Path, *, seed: int, r: int = 8, lora_alpha: float = 16,
                  target_modules: Any = None, **config: Any) -> Path:
    """peft.get_peft_model over the base checkpoint, every lora_A/lora_B randomised (peft starts B at zero, which
    would make the adapter a no-op), then peft's own save_pretrained."""
    model = transformers.Qwen3ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = peft.LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=target_modules or ALL_TARGETS,
                           lora_dropout=0.0, **config)
    peft_model = peft.get_peft_model(model, lora)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    peft_model.save_pretrained(dest)
    return dest


def peft_reference(base_dir: Path, adapter_dir: Path) -> Any:
    """transformers + peft with the adapter applied (unmerged), float32, eval."""
    model = transformers.Qwen3ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return peft.PeftModel.from_pretrained(model, adapter_dir).eval()
