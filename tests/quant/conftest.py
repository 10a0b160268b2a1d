"""Tiny float32 models for the quantization tests, one checkpoint per config, built once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qwick.model.loader import build_model, checkpoint_files, load_config, load_weights
from qwick.model.qwen3 import Qwen3ForCausalLM

from checkpoints import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_float_model(tmp_path_factory) -> Callable[[str], Qwen3ForCausalLM]:
    """name -> a fresh float32 qwick model of TINY_CONFIGS[name] (vocab 1000); callers may modify it."""
    folders: dict[str, Path] = {}

    def load(name: str) -> Qwen3ForCausalLM:
        if name not in folders:
            folders[name] = write_tiny_checkpoint(tmp_path_factory.mktemp("quant") / name, name, vocab_size=1000,
                                                  with_tokenizer=False)
        model = build_model(load_config(folders[name]), torch.float32, torch.device("cpu"))
        load_weights(model, checkpoint_files(folders[name]))
        return model

    return load
