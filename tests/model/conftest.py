"""Tiny checkpoints and models shared by the model tests, each built once per session and used read-only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qwick.model.loader import build_model, checkpoint_files, load_config, load_weights
from qwick.model.qwen3 import Qwen3ForCausalLM

from checkpoints import write_tiny_checkpoint

VOCAB = 1000  # model-only tests need no real tokenizer; a small vocab keeps them fast


def load_qwick(folder: Path, dtype: torch.dtype = torch.float32) -> Qwen3ForCausalLM:
    """The loading path the engine uses: config, empty model, weights."""
    model = build_model(load_config(folder), dtype, torch.device("cpu"))
    load_weights(model, checkpoint_files(folder))
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Callable[[str], Path]:
    """name -> folder holding TINY_CONFIGS[name] saved by transformers (float32, vocab 1000, no tokenizer)."""
    root = tmp_path_factory.mktemp("tiny-model")
    written: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in written:
            written[name] = write_tiny_checkpoint(root / name, name, vocab_size=VOCAB, with_tokenizer=False)
        return written[name]

    return get


@pytest.fixture(scope="session")
def qwick_model(tiny_checkpoint) -> Callable[..., Qwen3ForCausalLM]:
    """(name, dtype) -> our model loaded from the tiny checkpoint."""
    loaded: dict[tuple[str, torch.dtype], Qwen3ForCausalLM] = {}

    def get(name: str, dtype: torch.dtype = torch.float32) -> Qwen3ForCausalLM:
        if (name, dtype) not in loaded:
            loaded[name, dtype] = load_qwick(tiny_checkpoint(name), dtype)
        return loaded[name, dtype]

    return get


@pytest.fixture(scope="session")
def hf_model(tiny_checkpoint) -> Callable[..., torch.nn.Module]:
    """(name, dtype) -> transformers' Qwen3ForCausalLM loaded from the same checkpoint (the reference)."""
    import transformers

    transformers.logging.set_verbosity_error()  # tiny vocab: bos/eos ids outside it are expected
    loaded: dict[tuple[str, torch.dtype], torch.nn.Module] = {}

    def get(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        if (name, dtype) not in loaded:
            model = transformers.Qwen3ForCausalLM.from_pretrained(tiny_checkpoint(name), dtype=dtype)
            loaded[name, dtype] = model.eval().requires_grad_(False)
        return loaded[name, dtype]

    return get
