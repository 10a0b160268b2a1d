"""Fixtures for speculative decoding: a LoRA-enabled tiny LLM with n-gram speculation and a small KV budget (so
big batches preempt), and the tiny copy model (copy_model.py). Each test compares speculation on and off on
the same engine (`speckit.no_speculation`), so every difference is the speculation's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "lora"))

from adapters import write_adapter
from copy_model import train_copy_model
from speckit import NGRAM

from qwick import LLM
from qwick.lora.request import LoRARequest

KV_TOKENS = 384  # the tiny model's keys and values take 1 KiB a token (float32)


@pytest.fixture(scope="package")
def spec_llm(tiny_model_dir) -> LLM:
    return LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=256, speculative_config=NGRAM,
               enable_lora=True, max_loras=1, max_lora_rank=8, kv_cache_memory_bytes=KV_TOKENS * 1024)


@pytest.fixture(scope="package")
def adapter(tiny_model_dir, tmp_path_factory) -> LoRARequest:
    path = write_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "sql", seed=1, r=8, lora_alpha=12)
    return LoRARequest("sql", 1, str(path))


@pytest.fixture(scope="package")
def copy_llm(tmp_path_factory) -> LLM:
    folder = train_copy_model(tmp_path_factory.mktemp("copy") / "copy-lm")
    return LLM(folder, dtype="float32", device="cpu", max_model_len=256, skip_tokenizer_init=True,
               speculative_config={**NGRAM, "prompt_lookup_min": 2})

