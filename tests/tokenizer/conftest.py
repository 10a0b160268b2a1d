from __future__ import annotations

from pathlib import Path

import pytest

from qwick.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_dir: Path):
    """The reference: transformers' own tokenizer for the same folder (loaded once per module, ~2 s)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
