"""Exports shared by the GGUF tests, each written once per session.

The tiny *trained* model (tests/quant/trained.py, vocab 256, no tokenizer) carries the accuracy checks: it is
exported without a tokenizer, so its files open in well under a second. The tiny random model with the real
Qwen3 tokenizer (151,936 ids) carries the tokenizer and end-to-end checks: the gguf package's GGUFReader parses
a vocabulary that size slowly (seconds), so it is exported and opened once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "quant"))

from trained import BigramLanguage, train_tiny_lm

from qwick.export import export_gguf
from qwick.gguf import open_gguf
from qwick.gguf.reader import GGUFFile

TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, BigramLanguage]:
    return train_tiny_lm(tmp_path_factory.mktemp("trained") / "bigram-lm")


@pytest.fixture(scope="session")
def trained_exports(trained, tmp_path_factory) -> dict[str, Path]:
    """export type -> the trained model's GGUF file (no tokenizer)."""
    out = tmp_path_factory.mktemp("trained-gguf")
    return {q: export_gguf(trained[0], out / f"trained-{q}.gguf", q, with_tokenizer=False).path for q in TYPES}


@pytest.fixture(scope="session")
def tokenizer_export(tiny_model_dir: Path, tmp_path_factory) -> GGUFFile:
    """The tiny random model with the real tokenizer, exported to f32 and opened."""
    path = export_gguf(tiny_model_dir, tmp_path_factory.mktemp("tok-gguf") / "tiny-f32.gguf", "f32").path
    return open_gguf(path)
