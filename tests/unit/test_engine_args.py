"""EngineArgs holds exactly LLM's keywords, checks them before anything loads, and reads the CLI's flags."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields

import pytest

from qwick.cli import build_parser
from qwick.engine.args import EngineArgs
from qwick.llm import LLM


def test_engine_args_are_llm_keywords_with_the_same_defaults() -> None:
    params = {n: p.default for n, p in inspect.signature(LLM.__init__).parameters.items() if n != "self"}
    assert {f.name: f.default for f in fields(EngineArgs) if f.default is not MISSING} == params


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"quantization": "q4_0"}, "quantization must be None, 'int8' or 'int4'"),
    ({"compile_decode": True, "enable_lora": True}, "compile_decode does not support enable_lora"),
    ({"compile_decode": True, "kv_cache_dtype": "fp8"}, "compile_decode does not support an fp8 KV cache"),
    ({"enable_lora": True, "max_loras": 0}, "max_loras must be a positive integer"),
    ({"load_format": "gguf"}, "load_format must be 'auto', 'safetensors' or 'dummy'"),
    ({"kv_cache_dtype": "fp8_e5m2"}, "'fp8_e5m2' is not supported"),
    ({"max_num_seqs": 0}, "max_num_seqs must be a positive integer"),
    ({"kv_cache_memory_bytes": 0}, "kv_cache_memory_bytes must be positive"),
    ({"threads": 0}, "threads must be >= 1"),
    ({"gpu_memory_utilization": 1.5}, r"gpu_memory_utilization must be in \(0, 1\]"),
])
def test_bad_options_fail_without_a_model(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        EngineArgs(model="/no/such/model", **kwargs)


def test_from_cli_args_reads_the_flags_a_command_has() -> None:
    args = build_parser().parse_args(["serve", "m", "--compile", "--max-num-seqs", "3", "--seed", "7"])
    engine_args = EngineArgs.from_cli_args(args, enable_lora=False)
    assert (engine_args.model, engine_args.compile_decode, engine_args.max_num_seqs, engine_args.seed) == \
        ("m", True, 3, 7)
    assert engine_args.max_loras == 1  # serve's --max-loras (None by default) is not an EngineArgs value
