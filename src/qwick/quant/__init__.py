"""Weight-only quantized formats (int8 per-channel, int4 group-wise, fp8 checkpoints): modules, layout, checkpoints.
The pass that swaps them into a loaded model is passes/quantize.py."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qwick.quant.options import INT4_GROUP_SIZES, QUANTIZATION_METHODS, validate_quantization

if TYPE_CHECKING:
    from qwick.quant.int4 import Int4Linear
    from qwick.quant.int8 import Int8Embedding, Int8Linear

__all__ = ["INT4_GROUP_SIZES", "QUANTIZATION_METHODS", "Int4Linear", "Int8Embedding", "Int8Linear",
           "quantize_model", "validate_quantization"]
# Imported on first use (they need torch), so the `qwick quantize` parser builds without torch.
_LOCATIONS = {"Int4Linear": "qwick.quant.int4", "Int8Embedding": "qwick.quant.int8", "Int8Linear": "qwick.quant.int8",
              # the pass lives in passes/ (above quant/); this older public name still finds it, by name only
              "quantize_model": "qwick.passes.quantize"}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'qwick.quant' has no attribute {name!r}")
