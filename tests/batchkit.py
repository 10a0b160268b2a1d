"""Helpers for the batch and Ray tests: rows of every task, JSONL files, and the reference — each row through the
offline API one call at a time — that `qwick batch` must equal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qwick import LLM, SamplingParams
from qwick.gates.kinds import GATE_KINDS

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


GREEDY = SamplingParams(max_tokens=4, temperature=0)


def one_by_one(llm: LLM, task: str, rows: list[dict], gates_file: Any = None, gate: str | None = None) -> dict:
    """id -> output fields, each row its own offline call."""
    gates = llm.new_gates()
    if gates_file is not None:
        gates.load_gates(gates_file)
    out = {}
    for row in rows:
        out[row["id"]] = {"id": row["id"], **_one(llm, gates, task, row, gate)}
    return out


def _one(llm: LLM, gates: Any, task: str, row: dict, gate: str | None) -> dict:
    if task == "generate":
        sample = llm.generate(row["prompt"], GREEDY)[0]
        return {"text": sample.outputs[0].text, "finish_reason": sample.outputs[0].finish_reason,
                "prompt_tokens": len(sample.prompt_token_ids), "completion_tokens": len(sample.outputs[0].token_ids)}
    if task == "chat":
        sample = llm.chat(row["messages"], GREEDY, chat_template_kwargs={"enable_thinking": False})[0]
        out = sample.outputs[0]
        return {"content": out.content, "reasoning_content": out.reasoning_content, "tool_calls": None,
                "finish_reason": out.finish_reason, "prompt_tokens": len(sample.prompt_token_ids),
                "completion_tokens": len(out.token_ids)}
    if task == "embed":
        return {"embedding": llm.embed(row["text"])[0]}
    if task == "score":
        return {"gate": "score", "scores": llm.score(row["query"], row["items"])}
    if task == "classify":
        decision = gates.classify(row["text"])
    elif task == "moderate":
        decision = gates.moderate(row["text"])
    else:
        decision = gates.gate(gate or task, row["text"])
    return {"gate": decision.gate, **GATE_KINDS[decision.kind].response(decision, {"text": row["text"]})}


def assert_same_rows(got: dict, expected: dict, tolerance: float = 1e-5) -> None:
    """Same ids, same fields; texts and labels exactly, probabilities and vectors within `tolerance` (rows that
    run together share engine steps, whose float sums may round differently from a row run alone)."""
    assert got.keys() == expected.keys()
    for key, row in expected.items():
        _same(got[key], row, tolerance, f"id {key}")


def _same(a: Any, b: Any, tolerance: float, where: str) -> None:
    if isinstance(b, float):
        assert abs(a - b) <= tolerance, f"{where}: {a} != {b}"
    elif isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), f"{where}: {a} != {b}"
        for k in b:
            _same(a[k], b[k], tolerance, f"{where}.{k}")
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), f"{where}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, tolerance, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
