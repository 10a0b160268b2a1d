"""Helpers for the training tests: JSONL files and small chat rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One JSON value per line (strings are written as they are, to make broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(user: str, answer: str, **assistant: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer, **assistant}]}


def magic_word_rows(n: int) -> list[dict[str, Any]]:
    """A synthetic task a LoRA learns in a few steps: every question gets the same answer."""
    return [chat(f"Question number {i}: what is the magic word?", "Abracadabra, always.") for i in range(n)]
