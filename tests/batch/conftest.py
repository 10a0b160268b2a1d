"""Fixtures: one tiny random Qwen3 (real Qwen3 tokenizer) for the package and a gates file whose generation
gates answer in a few tokens (helpers: tests/batchkit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchkit import GATES
from qwick import LLM


@pytest.fixture(scope="package")
def llm(tiny_model_dir) -> LLM:
    return LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=512, max_num_seqs=32)


@pytest.fixture(scope="package")
def gates_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gates") / "gates.yaml"
    path.write_text(GATES, encoding="utf-8")
    return path
