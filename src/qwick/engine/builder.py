"""The composition root: EngineArgs -> model (load, quantize, pack, LoRA) + tokenizer + LLMEngine (+ compile).

The one place the pieces are put together, in the order they must be: `LLM`, `qwick serve`, the CLI and the
benchmarks all build through `build_engine`. A new model pass or engine option is wired here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from qwick.device import resolve_device, resolve_dtype, resolve_threads
from qwick.engine.args import EngineArgs
from qwick.engine.config import EngineConfig
from qwick.engine.cuda_graphs import capture_decode_graphs
from qwick.engine.gpu_memory import profile_kv_budget
from qwick.engine.llm_engine import LLMEngine
from qwick.gguf import is_gguf_path
from qwick.lora.manager import LoRAManager
from qwick.model.config import Qwen3Config
from qwick.model.hub import resolve_model_path
from qwick.model.loader import load_config
from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.passes.compile import compile_decode as compile_decode_pass
from qwick.passes.cpu_packing import cpu_packing_supported, pack_linears_for_cpu
from qwick.passes.load import load_model
from qwick.sampling_params import GenerationDefaults
from qwick.tokenizer import Tokenizer


@dataclass
class BuiltEngine:
    """What `build_engine` made: the engine and the parts its users read (LLM keeps each as an attribute)."""

    args: EngineArgs
    model_path: Path  # the resolved local folder
    model_config: Qwen3Config
    device: torch.device
    dtype: torch.dtype
    model: Qwen3ForCausalLM
    lora: LoRAManager | None  # the adapter slots, with enable_lora
    tokenizer: Tokenizer | None  # None with skip_tokenizer_init
    config: EngineConfig  # max_model_len resolved
    generation_defaults: GenerationDefaults
    engine: LLMEngine

    @property
    def max_model_len(self) -> int:
        return self.config.max_model_len


def build_engine(args: EngineArgs) -> BuiltEngine:
    """Load the model and run its passes, then build the engine over it; the order matters (comments say why)."""
    torch.set_num_threads(resolve_threads(args.threads))  # process-wide: torch has one intra-op pool
    model_path = resolve_model_path(args.model, args.revision)
    gguf_file = None
    if is_gguf_path(model_path):  # config and tokenizer are in the file
        from qwick.gguf.reader import open_gguf

        gguf_file = open_gguf(model_path)
    model_config = gguf_file.config if gguf_file is not None else load_config(model_path)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device, model_config.torch_dtype)
    # float, FP8 or qwick-quantized checkpoint; `quantization` quantizes a float one now (qwick/quant)
    model = load_model(model_path, model_config, dtype, device, load_format=args.load_format,
                       quantization=args.quantization, group_size=args.quantization_group_size, seed=args.seed,
                       gguf_file=gguf_file)
    if cpu_packing_supported(dtype, device) and not args.compile_decode:  # inductor cannot take
        pack_linears_for_cpu(model)  # oneDNN-packed weights as graph inputs: compiled bf16 stays plain
    if device.type == "cuda" and args.gpu_memory_utilization is not None and args.kv_cache_memory_bytes is None:
        args = replace(args, kv_cache_memory_bytes=profile_kv_budget(  # before LoRA: a plain forward
            model, device, args.gpu_memory_utilization, args.max_num_batched_tokens, args.max_num_seqs))
    # last: LoRA wraps whatever the projections now are (packed, quantized or plain)
    lora_config = args.lora_config
    lora = LoRAManager(model, lora_config, dtype, device) if lora_config else None
    # skip_tokenizer_init (vLLM's flag): token ids in, token ids out, no text
    tokenizer = None if args.skip_tokenizer_init else (
        gguf_file.tokenizer() if gguf_file is not None and args.tokenizer is None
        else Tokenizer.from_pretrained(args.tokenizer or model_path))
    config = engine_config(args, model_config, dtype, device)
    defaults = generation_defaults(model_path, tokenizer, model_config.eos_token_id)
    engine = LLMEngine(model, tokenizer, defaults, config, device, dtype, args.seed, lora=lora)
    if args.compile_decode:  # after the engine: the warm-up compiles on its KV cache's scratch slot
        compile_decode_pass(model).warm_up(engine.runner.cache, args.max_num_seqs)
    elif device.type == "cuda" and not args.enforce_eager and lora is None:  # LoRA's per-row state: eager
        engine.runner.graphs = capture_decode_graphs(model, engine.cache, device, config.max_num_seqs,
                                                     config.max_model_len)
    return BuiltEngine(args, model_path, model_config, device, dtype, model, lora, tokenizer, config, defaults,
                       engine)


def engine_config(args: EngineArgs, model: Qwen3Config, dtype: torch.dtype, device: torch.device) -> EngineConfig:
    """The engine's limits: `args`' sizes, max_model_len checked against the model's or fitted to the KV budget."""
    limit = model.max_position_embeddings
    if args.max_model_len is not None and not 0 < args.max_model_len <= limit:
        raise ValueError(f"max_model_len must be in [1, {limit}] (the model's max_position_embeddings), "
                         f"got {args.max_model_len}")
    config = EngineConfig(args.max_model_len or limit, args.max_num_seqs, args.max_num_batched_tokens,
                          args.block_size, args.kv_cache_memory_bytes, args.enable_prefix_caching,
                          args.kv_cache_dtype, args.jump_forward, args.speculative)
    if args.max_model_len is None:  # like Ollama, fit the context to the KV budget rather than fail
        cache_dtype = config.cache_dtype(dtype)
        blocks = config.budget_blocks(model, cache_dtype, device)
        # the budget measured now is the one the cache gets: free memory read again later (after the weights, or
        # beside other engines in the process or on the machine) could be smaller than the context fitted to it
        budget = config.kv_cache_memory_bytes or blocks * config.bytes_per_block(model, cache_dtype)
        config = replace(config, max_model_len=max(1, min(limit, blocks * args.block_size)),
                         kv_cache_memory_bytes=budget)
    return config


def generation_defaults(folder: Path, tokenizer: Tokenizer | None,
                        config_eos: int | list[int] | None) -> GenerationDefaults:
    """The model's generation_config.json; without one, neutral sampling that stops on the EOS token."""
    path = folder / "generation_config.json"
    raw: dict[str, Any] = {}
    if path.is_file():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if "eos_token_id" not in raw:
        raw["eos_token_id"] = tokenizer.eos_token_id if tokenizer is not None else config_eos
    return GenerationDefaults.from_dict(raw)
