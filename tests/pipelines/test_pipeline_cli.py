"""`qwick pipeline run FILE NAME --text ...`: the result (text or --json), the ledger, and one-line errors."""

from __future__ import annotations

import json

import pytest

from qwick.cli import main
from qwick.gates.ledger_query import connect, trace

FILE = """\
gates:
  - {name: open, kind: moderate, instruction: "One of: {labels}", labels: [safe, unsafe], threshold: 0.0}
pipelines:
  check:
    - {name: guard, kind: moderate, gate: open, stop_if: deny}
    - {name: intent, kind: classify, instruction: "One of: {labels}", labels: [question, other]}
  hurried:
    - {name: guard, kind: moderate, gate: open, deadline_ms: 0.001}
"""


@pytest.fixture
def gates_file(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text(FILE)
    return path


def _model(tiny_model_dir) -> list[str]:
    return ["--model", str(tiny_model_dir), "--dtype", "float32", "--max-model-len", "512"]


def test_run_prints_the_result_and_records_the_steps(gates_file, tiny_model_dir, tmp_path, capsys):
    ledger = tmp_path / "l.db"
    code = main(["pipeline", "run", str(gates_file), "check", "--text", "is it open?", "--json", "--vars", '{"a": 1}',
                 "--ledger", str(ledger), "--ledger-raw-text", *_model(tiny_model_dir)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in result["steps"]] == ["guard", "intent"] and result["output"] == "is it open?"
    rows = trace(connect(ledger), result["trace_id"])
    assert [r["step"] for r in rows] == ["guard", "intent"] and rows[0]["input"] == {"text": "is it open?"}
    assert main(["pipeline", "run", str(gates_file), "check", "--text", "hi", *_model(tiny_model_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("guard (moderate): allow") and out[-2] == "hi" and out[-1].startswith("trace trace-")


def test_a_failing_step_exits_1_with_one_line(gates_file, tiny_model_dir, capsys):
    assert main(["pipeline", "run", str(gates_file), "hurried", "--text", "hi", *_model(tiny_model_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qwick: error: pipeline 'hurried': step 'guard' missed the step's deadline")
    assert err.count("\n") == 1


@pytest.mark.parametrize(("args", "message"), [
    (["check", "--vars", "[1]"], "--vars must be a JSON object, got list"),
    (["check", "--vars", "{"], "--vars must be a JSON object:"),
    (["nope"], "no pipeline named 'nope'; defined: check, hurried"),
    (["check", "--ledger-raw-text"], "--ledger-raw-text needs --ledger PATH"),
])
def test_bad_arguments_fail_before_the_model_loads(gates_file, tmp_path, capsys, args, message):
    name, *rest = args
    code = main(["pipeline", "run", str(gates_file), name, "--text", "hi", "--model", str(tmp_path / "no-model"), *rest])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("qwick: error: ") and message in err and err.count("\n") == 1


def test_an_invalid_file_names_its_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelines:\n  p:\n    - {kind: classify, gate: moderate}\n")
    assert main(["pipeline", "run", str(bad), "p", "--text", "hi"]) == 2
    assert f"{bad}:3: pipeline 'p': step 'classify': gate 'moderate' is a moderate gate" in capsys.readouterr().err
    assert main(["pipeline", "run", str(tmp_path / "missing.yaml"), "p", "--text", "hi"]) == 2
    assert "cannot read the gates file" in capsys.readouterr().err
