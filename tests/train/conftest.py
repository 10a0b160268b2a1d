from __future__ import annotations

from pathlib import Path

import pytest

from qwick.tokenizer import Tokenizer
from qwick.train.render import Renderer


@pytest.fixture(scope="package")
def tokenizer(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="package")
def renderer(tokenizer: Tokenizer) -> Renderer:
    return Renderer(tokenizer)
