"""qwick: a fast inference and serving engine for small Qwen3 models."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwick.llm import LLM
    from qwick.lora.request import LoRARequest
    from qwick.outputs import CompletionOutput, Logprob, RequestOutput, StreamDelta
    from qwick.sampling_params import SamplingParams, StructuredOutputsParams

__all__ = ["LLM", "CompletionOutput", "LoRARequest", "Logprob", "RequestOutput", "SamplingParams", "StreamDelta",
           "StructuredOutputsParams"]
__version__ = "0.1.0"

# Imported on first use so `import qwick.model` (or the CLI's --help) does not load the whole engine.
_LOCATIONS = {
    "LLM": "qwick.llm",
    "LoRARequest": "qwick.lora.request",
    "CompletionOutput": "qwick.outputs",
    "Logprob": "qwick.outputs",
    "RequestOutput": "qwick.outputs",
    "StreamDelta": "qwick.outputs",
    "SamplingParams": "qwick.sampling_params",
    "StructuredOutputsParams": "qwick.sampling_params",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'qwick' has no attribute {name!r}")
