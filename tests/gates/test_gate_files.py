"""Gate definitions: built-ins, YAML gates files, and errors that name the line and the problem."""

from __future__ import annotations

import pytest

from qwick.gates.defaults import BUILTIN_GATES
from qwick.gates.loader import GateFileError, load_gates, parse_gates
from qwick.gates.spec import GateError, GateSpec
from qwick.tokenizer import Tokenizer

GOOD = """\
gates:
  - name: strict
    kind: moderate
    instruction: "Answer with one of: {labels}"
    labels: [safe, violence, hate]
    threshold: 0.8
    deadline_ms: 150
    on_timeout: deny
  - name: moderate          # replaces the built-in moderation gate
    kind: moderate
    instruction: "Pick one of {labels}"
    labels: [safe, unsafe]
"""


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_pretrained(tokenizer_dir)


def test_builtin_gates_are_valid_and_cover_every_endpoint(tokenizer):
    gates = load_gates(None)
    gates.check_tokens(tokenizer)
    assert {"moderate", "classify", "rewrite", "score"} <= set(gates)
    assert all(not spec.thinking for spec in BUILTIN_GATES)


def test_a_gates_file_adds_and_overrides_gates(tmp_path, tokenizer):
    path = tmp_path / "gates.yaml"
    path.write_text(GOOD)
    gates = load_gates(path)
    gates.check_tokens(tokenizer)
    assert gates["strict"].labels == ("safe", "violence", "hate")
    assert gates["strict"].threshold == 0.8 and gates["strict"].on_timeout == "deny"
    assert gates["moderate"].labels == ("safe", "unsafe")
    assert gates["score"].kind == "score"  # built-ins not in the file stay


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("gates:\n  - name: a\n    kind: moderate\n    instruction: x\n    labels: [safe, bad]\n    threshold: 2\n",
     6, "threshold must be a number in \\[0, 1\\]"),
    ("gates:\n  - name: a\n    kind: judge\n    instruction: x\n", 3, "kind must be one of"),
    ("gates:\n  - name: a\n    kind: classify\n    instruction: x\n    labels: [a, b]\n    lables: [c]\n",
     6, "unknown field\\(s\\) lables"),
    ("gates:\n  - name: a\n    kind: classify\n    instruction: x\n    labels: [a, b]\n"
     "  - name: a\n    kind: classify\n    instruction: y\n    labels: [c, d]\n", 6, "defined twice \\(first at line 2\\)"),
    ("gates:\n  - name: a\n    kind: moderate\n    instruction: x\n    labels: [ok, bad]\n", 5,
     "safe_label 'safe' must be one of the labels"),
    ("gates:\n  - name: a\n    kind: classify\n    labels: [a, b]\n", 2, "'name', 'kind' and 'instruction' are required"),
    ("gates:\n  - name: a\n    kind: moderate\n    instruction: x\n    labels: [safe, bad]\n    on_timeout: ignore\n",
     6, "on_timeout must be one of allow, deny, escalate"),
    ("gates:\n  - name: a\n    kind: moderate\n    instruction: [x\n", 5, "invalid YAML"),
    ("gatez: []\n", 1, "expected a mapping with a 'gates' list"),
    ("gates: []\nextra: 1\n", 2, "unknown top-level key 'extra'"),
    ("gates:\n  - just a string\n", 2, "each gate must be a mapping"),
    ("gates:\n  - name: r\n    kind: rewrite\n    instruction: x\n", 2, "needs a JSON schema"),
])
def test_invalid_gates_files_name_the_line_and_the_problem(text, line, problem):
    with pytest.raises(GateFileError, match=rf"^gates\.yaml:{line}: .*{problem}"):
        parse_gates(text, "gates.yaml")


def test_label_tokens_that_prefix_another_label_are_refused_with_the_line(tokenizer):
    # "hate" is [71, 349]; "h" is [71]: P("h") would include P("hate")
    gates = parse_gates("gates:\n  - name: a\n    kind: classify\n    instruction: x\n    labels: [h, hate]\n",
                        "gates.yaml")
    with pytest.raises(GateFileError, match=r"^gates\.yaml:5: .*label 'h' tokenizes to a prefix of label 'hate'"):
        gates.check_tokens(tokenizer)


def test_an_invalid_json_schema_is_refused_with_the_line(tokenizer):
    gates = parse_gates("gates:\n  - name: r\n    kind: rewrite\n    instruction: x\n    schema: {type: 12}\n",
                        "gates.yaml")
    with pytest.raises(GateFileError, match=r"^gates\.yaml:5: .*schema is not valid JSON Schema"):
        gates.check_tokens(tokenizer)


def test_a_missing_gates_file_is_named(tmp_path):
    with pytest.raises(GateFileError, match=r"nope\.yaml: cannot read the gates file"):
        load_gates(tmp_path / "nope.yaml")


def test_spec_validation_names_the_field():
    with pytest.raises(GateError, match="labels must be distinct") as info:
        GateSpec("g", "classify", "x", labels=("a", "a"))
    assert info.value.field == "labels"
    with pytest.raises(GateError, match="labels only apply to moderate and classify"):
        GateSpec("g", "score", "x", labels=("a", "b"))
    with pytest.raises(GateError, match="deadline_ms must be a positive number"):
        GateSpec("g", "score", "x", deadline_ms=0)
    with pytest.raises(GateError, match="thinking: true is only supported by rewrite and extract gates"):
        GateSpec("g", "classify", "x", labels=("a", "b"), thinking=True)
