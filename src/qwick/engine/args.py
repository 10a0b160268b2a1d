"""EngineArgs: every option an engine is built from (vLLM's names), validated once, before anything loads.

`LLM(model, **kwargs)`, `qwick serve`, the CLI and the benchmarks all build through `EngineArgs` and
`qwick.engine.builder.build_engine`. Checks that need the model (max_model_len against its context length, the
KV budget) run in the builder, after config.json is read.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from qwick.engine.spec_decode.config import SpeculativeConfig
from qwick.lora.manager import LoRAConfig
from qwick.quant import validate_quantization

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3")  # vLLM's names; "auto": the model's dtype
LOAD_FORMATS = ("auto", "safetensors", "dummy")
# EngineArgs fields whose command-line flag has another name (qwick's `--compile`)
_CLI_NAMES = {"compile_decode": "compile"}
# LoRA's serve flags mean something else (defaults from --lora-modules): callers pass these as overrides
_NOT_FROM_CLI = ("enable_lora", "max_loras", "max_lora_rank")


@dataclass(frozen=True)
class EngineArgs:
    """The keywords of `LLM(...)`, one field each, same defaults (a unit test keeps the two in step)."""

    model: str | Path = DEFAULT_MODEL
    tokenizer: str | Path | None = None  # default: the model's folder
    dtype: str | torch.dtype = "auto"
    device: str = "auto"
    max_model_len: int | None = None  # None: the model's, lowered to what the KV budget holds
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512  # per step; chunked prefill splits longer prompts
    block_size: int = 16
    kv_cache_memory_bytes: int | None = None
    enable_prefix_caching: bool = True
    seed: int | None = None
    load_format: str = "auto"  # "dummy": random weights from config.json alone
    revision: str | None = None
    skip_tokenizer_init: bool = False  # token ids in, token ids out, no text
    quantization: str | None = None
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    quantization_group_size: int | None = None
    threads: int | None = None
    compile_decode: bool = False
    kv_cache_dtype: str = "auto"  # "fp8" / "fp8_e4m3": keys and values stored as float8 e4m3, scale 1
    enforce_eager: bool = False  # CUDA: no CUDA-graph decode (engine/cuda_graphs.py)
    gpu_memory_utilization: float | None = None  # CUDA: share of GPU memory for weights + activations + KV cache
    speculative_config: dict[str, Any] | str | None = None  # vLLM's {"method": "ngram", ...}: prompt lookup
    jump_forward: bool = True  # forced tokens (grammar, thinking-budget closer) appended without sampling

    def __post_init__(self) -> None:
        validate_quantization(self.quantization, self.quantization_group_size or 128)
        if self.compile_decode and self.enable_lora:
            raise ValueError("compile_decode does not support enable_lora yet: use one or the other")
        if self.compile_decode and self.kv_cache_dtype != "auto":
            raise ValueError("compile_decode does not support an fp8 KV cache yet: use kv_cache_dtype='auto' with it")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.enable_lora:
            LoRAConfig(self.max_loras, self.max_lora_rank)  # checks the sizes
        if self.load_format not in LOAD_FORMATS:
            raise ValueError(f"load_format must be 'auto', 'safetensors' or 'dummy', got {self.load_format!r}")
        if self.kv_cache_dtype == "fp8_e5m2":
            raise ValueError("kv_cache_dtype 'fp8_e5m2' is not supported: qwick stores an fp8 KV cache as e4m3 "
                             "('fp8' or 'fp8_e4m3')")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {self.kv_cache_dtype!r}")
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.speculative_config is not None and self.compile_decode:
            raise ValueError("speculative_config does not work with compile_decode (its decode takes one token per "
                             "sequence): use one or the other")
        SpeculativeConfig.parse(self.speculative_config)  # fails here, naming the key
        if not isinstance(self.jump_forward, bool):
            raise ValueError(f"jump_forward must be a boolean, got {self.jump_forward!r}")
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes < 1:
            raise ValueError(f"kv_cache_memory_bytes must be positive, got {self.kv_cache_memory_bytes}")

    @property
    def speculative(self) -> SpeculativeConfig | None:
        """The checked speculative_config (None: no speculation)."""
        return SpeculativeConfig.parse(self.speculative_config)

    @property
    def lora_config(self) -> LoRAConfig | None:
        """The adapter slots (None without enable_lora); LoRAConfig checks the sizes."""
        return LoRAConfig(self.max_loras, self.max_lora_rank) if self.enable_lora else None

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace, **overrides: Any) -> EngineArgs:
        """The options a parsed command line sets (the flags it has; the rest keep their defaults), then
        `overrides` (LoRA settings, or what a command fixes)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            flag = _CLI_NAMES.get(f.name, f.name)
            if f.name not in _NOT_FROM_CLI and hasattr(args, flag):
                values[f.name] = getattr(args, flag)
        return cls(**{**values, **overrides})
