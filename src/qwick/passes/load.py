"""The model for `LLM`: the checkpoint's format picked by its config.json, then quantized now if asked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from qwick.model.config import Qwen3Config
from qwick.model.loader import build_model, init_dummy_weights
from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.passes.quantize import quantize_model
from qwick.quant.checkpoint import QuantSpec, check_matches, load_float
from qwick.quant.hf_int4 import hf_int4_spec, load_hf_int4
from qwick.quant.options import DEFAULT_GROUP_SIZE
from qwick.quant.qwick_format import load_quantized

if TYPE_CHECKING:
    from qwick.gguf.reader import GGUFFile


def load_model(folder: Path, config: Qwen3Config, dtype: torch.dtype, device: torch.device, *,
               load_format: str = "auto", quantization: str | None = None, group_size: int | None = None,
               seed: int | None = None, kernel: str = "auto", gguf_file: GGUFFile | None = None) -> Qwen3ForCausalLM:
    """The model for `LLM`: float, FP8 (dequantized), qwick-quantized, a GGUF file (dequantized), or quantized
    now by `quantization`. A GGUF file (`gguf_file`, opened by the caller for its config) is read once."""
    if (gguf_file is not None or folder.is_file()) and load_format != "dummy":
        from qwick.gguf.load import load_gguf  # the gguf package: only for GGUF files
        from qwick.gguf.reader import open_gguf

        model = load_gguf(gguf_file or open_gguf(folder), dtype, device)
        if quantization is not None:
            quantize_model(model, quantization, group_size or DEFAULT_GROUP_SIZE, kernel=kernel)
        return model
    hf_int4 = hf_int4_spec(config.raw) if load_format != "dummy" else None
    if hf_int4 is not None:  # GPTQ / AWQ: their codes and scales onto qwick's int4 modules
        if quantization not in (None, "int4") or group_size not in (None, hf_int4.group_size):
            raise ValueError(f"{folder} is a {hf_int4.method} int4 checkpoint (group size {hf_int4.group_size}): "
                             "load it without quantization or group_size, or quantize the float model instead")
        return load_hf_int4(folder, config, hf_int4, dtype, device, kernel)
    stored = QuantSpec.from_config(config.raw) if load_format != "dummy" else None
    if stored is not None:
        check_matches(stored, quantization, group_size, folder)
        return load_quantized(folder, config, stored, dtype, device, kernel)
    model = build_model(config, dtype, device)
    if load_format == "dummy":
        init_dummy_weights(model, seed=seed or 0)
    else:
        load_float(model, folder, config.raw)
    if quantization is not None:  # before packing: it needs dense weights, and packing skips quantized modules
        quantize_model(model, quantization, group_size or DEFAULT_GROUP_SIZE, kernel=kernel)
    return model
