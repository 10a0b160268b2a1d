from __future__ import annotations

import pytest
import torch
import transformers

from qwick import LLM


@pytest.fixture(scope="package")
def llm(tiny_model_dir) -> LLM:
    return LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=1024)


@pytest.fixture(scope="package")
def hf_model(tiny_model_dir) -> transformers.Qwen3ForCausalLM:
    return transformers.Qwen3ForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
