from __future__ import annotations

import pytest

from qwick import LLM


@pytest.fixture(scope="package")
def llm(tiny_model_dir) -> LLM:
    return LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=1024)
