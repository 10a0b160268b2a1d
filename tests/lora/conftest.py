"""Fixtures: two PEFT adapters of the tiny checkpoint, written by peft, and a LoRA-enabled float32 LLM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "server"))  # serverkit, for the server tests

from adapters import write_adapter

from qwick import LLM
from qwick.lora.request import LoRARequest


@pytest.fixture(scope="package")
def adapter_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """`sql`: r=8 on all 7 projections, alpha 12 (scale 1.5); `chat`: r=4 on q/v/down only, rsLoRA, alpha 6."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "sql": write_adapter(tiny_model_dir, root / "sql", seed=1, r=8, lora_alpha=12),
        "chat": write_adapter(tiny_model_dir, root / "chat", seed=2, r=4, lora_alpha=6,
                              target_modules=["q_proj", "v_proj", "down_proj"], use_rslora=True),
    }


@pytest.fixture(scope="package")
def sql(adapter_dirs) -> LoRARequest:
    return LoRARequest("sql", 1, str(adapter_dirs["sql"]))


@pytest.fixture(scope="package")
def chat(adapter_dirs) -> LoRARequest:
    return LoRARequest("chat", 2, str(adapter_dirs["chat"]))


@pytest.fixture(scope="package")
def lora_llm(tiny_model_dir) -> LLM:
    return LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=256, enable_lora=True, max_loras=2,
               max_lora_rank=8)
