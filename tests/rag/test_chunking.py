"""Chunking by tokens on paragraph and sentence boundaries, with whole-sentence overlap."""

from __future__ import annotations

import itertools

import pytest

from qwick.rag.chunking import chunk_text
from qwick.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_pretrained(tokenizer_dir)


def test_chunks_respect_the_size_and_cut_at_sentences(tokenizer):
    sentences = [f"Sentence number {i} says something about topic {i % 7}." for i in range(60)]
    text = "\n\n".join(" ".join(sentences[i:i + 5]) for i in range(0, 60, 5))
    chunks = chunk_text(text, tokenizer, 64, 16)
    assert len(chunks) > 5 and [c.n for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.tokens <= 64 + 2 and c.tokens == len(tokenizer.encode(c.text))
        assert c.text.startswith("Sentence") and c.text.endswith(".")  # whole sentences only
        assert c.text in text  # a span of the original
    for a, b in itertools.pairwise(chunks):
        first = b.text.split(".")[0] + "."
        assert first in a.text  # the overlap: the next chunk starts with the previous one's last sentence(s)


def test_no_overlap_and_long_sentences(tokenizer):
    long_sentence = " ".join(f"word{i}" for i in range(300))
    chunks = chunk_text(long_sentence + ". Short one.", tokenizer, 32, 0)
    assert all(c.tokens <= 34 for c in chunks)
    assert "".join(c.text.replace(" ", "") for c in chunks) == (long_sentence + ". Short one.").replace(" ", "")
    giant = "x" * 5000  # one "word" far over the limit: cut into pieces
    assert all(c.tokens <= 32 for c in chunk_text(giant, tokenizer, 32, 0))


def test_bad_sizes(tokenizer):
    with pytest.raises(ValueError, match="--chunk-tokens"):
        chunk_text("x", tokenizer, 4, 0)
    with pytest.raises(ValueError, match="--overlap"):
        chunk_text("x", tokenizer, 64, 40)
