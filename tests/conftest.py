from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from checkpoints import copy_tokenizer_files, write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen3 checkpoint (vocab 151936) with the real Qwen3 tokenizer."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tied_gqa2")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """Only the tokenizer files of a Qwen3 model folder."""
    dest = tmp_path_factory.mktemp("tok")
    copy_tokenizer_files(dest)
    return dest
