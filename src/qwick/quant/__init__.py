"""Weight-only quantization passes (int8 per-channel, int4 group-wise) over a loaded Qwen3 model."""

from __future__ import annotations

from qwick.quant.apply import QUANTIZATION_METHODS, quantize_model, validate_quantization
from qwick.quant.int4 import INT4_GROUP_SIZES, Int4Linear
from qwick.quant.int8 import Int8Embedding, Int8Linear

__all__ = ["INT4_GROUP_SIZES", "QUANTIZATION_METHODS", "Int4Linear", "Int8Embedding", "Int8Linear",
           "quantize_model", "validate_quantization"]
