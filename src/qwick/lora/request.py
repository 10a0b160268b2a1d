"""LoRARequest: which adapter a request runs with (vLLM's class and field names). Plain Python, no torch."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class LoRARequest:
    """A PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`).

    `lora_int_id` is the adapter's identity (>= 1, as in vLLM): loaded adapters are cached by it, and the prefix
    cache keeps each id's KV blocks apart. One id must always name the same adapter.
    """

    lora_name: str
    lora_int_id: int
    lora_path: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.lora_path, os.PathLike):  # a pathlib.Path is fine too; stored as str like vLLM
            object.__setattr__(self, "lora_path", os.fspath(self.lora_path))
        if not isinstance(self.lora_name, str) or not self.lora_name:
            raise ValueError(f"lora_name must be a non-empty string, got {self.lora_name!r}")
        if not isinstance(self.lora_int_id, int) or isinstance(self.lora_int_id, bool) or self.lora_int_id < 1:
            raise ValueError(f"lora_int_id must be an integer >= 1 (0 means no adapter), got {self.lora_int_id!r}")
        if not isinstance(self.lora_path, str) or not self.lora_path:
            raise ValueError(f"lora_path must name the adapter folder, got {self.lora_path!r}")


def adapter_kwargs(lora: LoRARequest | None) -> dict[str, LoRARequest]:
    """Engine-client keywords (`generate`, `score`, `embed`) for a request's adapter: none for the base model, so
    clients that predate LoRA (wrappers, test doubles) serve base requests unchanged."""
    return {"lora_request": lora} if lora is not None else {}
