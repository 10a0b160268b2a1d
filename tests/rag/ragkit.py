"""Helpers of the rag tests: a corpus of small files, each with one rare word of its own (`zorblax{i}`)."""

from __future__ import annotations

from pathlib import Path

FILES = 30
CHUNK_TOKENS, OVERLAP = 48, 8


def rare(i: int) -> str:
    return f"zorblax{i}"


def write_corpus(folder: Path, count: int = FILES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i:02d}.txt").write_text(
            f"Document {i} talks about the weather and other common things. It rains in spring.\n\n"
            f"The special word of this file is {rare(i)}. Nothing else here is special at all. "
            "The sun rises in the east and sets in the west, as it always has.\n")
    return folder
