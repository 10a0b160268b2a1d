"""Pipelines in a gates file: what parses, and every invalid file failing with `file:line: what is wrong`."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from qwick.gates.loader import GateFileError, load_gates, parse_gates
from qwick.pipelines.loader import PipelineFileError, parse_pipelines

GATES = """\
gates:
  - name: strict
    kind: moderate
    instruction: "One of: {labels}"
    labels: [safe, unsafe]
    threshold: 0.9
"""


def _parse(pipelines: str, gates: str = GATES):
    return parse_pipelines(parse_gates(gates + textwrap.dedent(pipelines), "g.yaml"))


def _error(pipelines: str, gates: str = GATES) -> str:
    with pytest.raises((PipelineFileError, GateFileError)) as info:
        _parse(pipelines, gates)
    return str(info.value)


def test_a_full_pipeline_parses_with_its_gates_routes_and_deadlines():
    pipelines = _parse("""
        pipelines:
          support:
            deadline_ms: 3000
            on_timeout: deny
            steps:
              - {name: safety, kind: moderate, gate: strict, stop_if: deny}
              - name: intent
                kind: classify
                instruction: "One of: {labels}"
                labels: [question, chat]
                route_on: {chat: small_talk, question: search}
              - {kind: rewrite, deadline_ms: 500, on_timeout: skip}
              - {name: search, kind: retrieve, index: docs, top_k: 3, mode: bm25, rerank: true}
              - {kind: answer}
              - kind: format
                schema: {type: object, properties: {reply: {type: string}}, required: [reply]}
          small_talk:
            - {kind: moderate}
    """)
    assert set(pipelines) == {"support", "small_talk"}
    support = pipelines["support"]
    assert (support.deadline_ms, support.on_timeout) == (3000, "deny")
    assert [s.name for s in support.steps] == ["safety", "intent", "rewrite", "search", "answer", "format"]
    safety, intent, rewrite, search, answer, fmt = support.steps
    assert safety.gate.name == "strict" and safety.stop_if == ("deny",)
    assert intent.gate.labels == ("question", "chat") and intent.route_on == {"chat": "small_talk", "question": "search"}
    assert rewrite.gate.name == "rewrite" and (rewrite.deadline_ms, rewrite.on_timeout) == (500, "skip")
    assert (search.index, search.top_k, search.mode, search.rerank) == ("docs", 3, "bm25", True)
    assert answer.index == "docs"  # the retrieve step's index before it
    assert fmt.gate.kind == "extract" and fmt.gate.schema["required"] == ["reply"]
    assert pipelines["small_talk"].steps[0].gate.name == "moderate"  # the built-in gate of the kind
    assert safety.line == 13 and intent.line_of("route_on") == 18


def test_a_file_with_only_pipelines_is_a_gates_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("pipelines:\n  one: [{kind: moderate}]\n")
    gates = load_gates(path)
    assert "moderate" in gates and list(parse_pipelines(gates)) == ["one"]
    assert len(parse_pipelines(parse_gates(GATES))) == 0


@pytest.mark.parametrize(("pipelines", "line", "words"), [
    ("pipelines:\n  p: [{kind: summarize}]\n", 8, "kind must be one of moderate, classify"),
    ("pipelines:\n  p:\n    - {kind: moderate}\n    - {kind: rewrite, route_on: {valid: nowhere}}\n", 10,
     "no step or pipeline named 'nowhere'"),
    ("pipelines:\n  p:\n    - {name: a, kind: moderate}\n    - {name: b, kind: moderate, route_on: {allow: a}}\n", 10,
     "goes back to an earlier step: a cycle"),
    ("pipelines:\n  p:\n    - {name: a, kind: moderate, route_on: {allow: a}}\n", 9, "a cycle"),
    ("pipelines:\n  p: [{kind: moderate, route_on: {deny: q}}]\n  q: [{kind: moderate, route_on: {deny: p}}]\n", 9,
     "a cycle (p -> q -> p)"),
    ("pipelines:\n  p:\n    - kind: format\n      max_tokens: 8\n", 9, "needs a JSON schema object in 'schema'"),
    ("pipelines:\n  p:\n    - kind: format\n      schema: {type: 12}\n", 10, "schema is not valid JSON Schema"),
    ("pipelines:\n  p: [{kind: moderate, stop_if: maybe}]\n", 8, "stop_if names 'maybe'"),
    ("pipelines:\n  p: [{kind: moderate, gate: nope}]\n", 8, "no gate named 'nope'"),
    ("pipelines:\n  p: [{kind: classify, gate: strict}]\n", 8, "gate 'strict' is a moderate gate"),
    ("pipelines:\n  p: [{kind: extract}]\n", 8, "there is no built-in extract gate"),
    ("pipelines:\n  p: [{kind: retrieve}]\n", 8, "needs 'index'"),
    ("pipelines:\n  p:\n    - kind: retrieve\n      index: d\n      mode: fuzzy\n", 11, "mode must be one of"),
    ("pipelines:\n  p:\n    - kind: moderate\n      deadline_ms: -5\n", 10, "deadline_ms must be a positive number"),
    ("pipelines:\n  p:\n    - kind: rewrite\n      on_timeout: allow\n", 10, "allow only applies to moderate"),
    ("pipelines:\n  p:\n    - kind: moderate\n      colour: red\n", 10, "unknown field 'colour'"),
    ("pipelines:\n  p:\n    steps: [{kind: moderate}]\n    on_timeout: later\n", 10, "on_timeout must be one of"),
    ("pipelines:\n  p: {steps: []}\n", 8, "'steps' must be a non-empty list"),
    ("pipelines:\n  p: [{kind: moderate}, {kind: moderate}]\n", 8, "two steps are named 'moderate'"),
    ("pipelines:\n  p:\n    - kind: classify\n      labels: [only]\n      instruction: x\n", 10,
     "labels must list at least two"),
    ("pipelines: [1, 2]\n", 7, "'pipelines' must map pipeline names"),
    ("pipelines:\n  p: [{kind: moderate}]\n  p: [{kind: rewrite}]\n", 9, "pipeline 'p' is defined twice"),
])
def test_invalid_pipelines_name_the_file_and_line(pipelines, line, words):
    message = _error(pipelines)
    assert message.startswith(f"g.yaml:{line}:"), message
    assert words in message, message


def test_unknown_top_level_keys_are_still_refused():
    message = _error("pipeline:\n  p: [{kind: moderate}]\n")
    assert message.startswith("g.yaml:7:") and "only 'gates' and 'pipelines' are allowed" in message


def test_the_readme_example_parses():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    gates = next(b for b in blocks if b.startswith("gates:"))
    example = next(b for b in blocks if b.startswith("pipelines:"))
    pipelines = parse_pipelines(parse_gates(gates + example, "README.md"))
    assert [s.kind for s in pipelines["support"].steps] == ["moderate", "classify", "rewrite", "retrieve", "format"]
    assert pipelines["support"].steps[1].route_on == {"chitchat": "small_talk"}
