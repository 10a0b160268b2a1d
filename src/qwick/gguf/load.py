"""A GGUF file's model: built from its metadata's config, filled by the one loader from its tensor stream."""

from __future__ import annotations

import torch

from qwick.gguf.reader import GGUFError, GGUFFile
from qwick.model.loader import CheckpointError, build_model, load_weights
from qwick.model.qwen3 import Qwen3ForCausalLM


def load_gguf(file: GGUFFile, dtype: torch.dtype, device: torch.device) -> Qwen3ForCausalLM:
    """Every tensor dequantized to float32 by the gguf package, then cast to `dtype` as it lands."""
    path = file.path
    model = build_model(file.config, dtype, device)
    try:
        load_weights(model, [], source=file.tensors())
    except CheckpointError as exc:
        raise GGUFError(f"{path}: {exc}") from exc
    return model
