"""Fixtures: one tiny random Qwen3 (real Qwen3 tokenizer) for the package, a gates file whose generation gates
answer in a few tokens, and the rows of every task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwick import LLM

GATES = """
gates:
  - name: rewrite
    kind: rewrite
    instruction: "Rewrite the query. Reply with JSON."
    max_tokens: 24
    schema: {type: object, properties: {rewrite: {enum: [shoes, boots]}, reason_code: {enum: [unchanged, spelling]}},
             required: [rewrite, reason_code], additionalProperties: false}
  - name: city
    kind: extract
    instruction: "Extract the city"
    max_tokens: 24
    schema: {type: object, properties: {city: {enum: [Paris, Rome]}}, required: [city], additionalProperties: false}
"""
WORDS = ["refund", "Paris", "shoes", "hurt", "weather", "laptop", "cheap", "station", "hello", "why"]


def make_rows(task: str, count: int) -> list[dict]:
    """`count` distinct rows for `task` (ids "r0", "r1", ...)."""
    rows = []
    for i in range(count):
        text = f"{WORDS[i % len(WORDS)]} {WORDS[i * 7 % len(WORDS)]} number {i}"
        row: dict = {"id": f"r{i}"}
        if task == "generate":
            row["prompt"] = text
        elif task == "chat":
            row["messages"] = [{"role": "user", "content": text}]
        elif task == "score":
            row.update(query=text, items=[WORDS[i % 3], f"item {i}"])
        else:
            row["text"] = text
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="package")
def llm(tiny_model_dir) -> LLM:
    return LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=512, max_num_seqs=32)


@pytest.fixture(scope="package")
def gates_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gates") / "gates.yaml"
    path.write_text(GATES, encoding="utf-8")
    return path
