"""Tiny float32 models for the quantization tests, each built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from trained import BigramLanguage, Loader, load_float32, train_tiny_lm

from qwick.model.qwen3 import Qwen3ForCausalLM

from checkpoints import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_float_model(tmp_path_factory) -> Loader:
    """name -> a fresh float32 qwick model of TINY_CONFIGS[name] (vocab 1000, random); callers may modify it."""
    folders: dict[str, Path] = {}

    def load(name: str) -> Qwen3ForCausalLM:
        if name not in folders:
            folders[name] = write_tiny_checkpoint(tmp_path_factory.mktemp("quant") / name, name, vocab_size=1000,
                                                  with_tokenizer=False)
        return load_float32(folders[name])

    return load


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory) -> tuple[Path, BigramLanguage]:
    """(folder, language) of the tiny model trained on a bigram language (quant/trained.py; ~10 s once)."""
    return train_tiny_lm(tmp_path_factory.mktemp("trained") / "bigram-lm")
