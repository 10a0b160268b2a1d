"""POST /v1/pipelines/{name}: the result shape, X-Request-Id in the ledger, and hostile requests (unknown
pipeline, bad bodies, failing steps) answered in the one error shape, never a 500."""

from __future__ import annotations

import sqlite3

import pytest
from serverkit import MODEL, serving, tiny_llm

from qwick.gates.ledger import Ledger
from qwick.gates.loader import parse_gates
from qwick.pipelines.loader import PipelineFileError
from qwick.server import build_app
from qwick.server.routes.gates import GateOptions

FILE = """\
gates:
  - {name: open, kind: moderate, instruction: "One of: {labels}", labels: [safe, unsafe], threshold: 0.0}
  - {name: closed, kind: moderate, instruction: "One of: {labels}", labels: [safe, unsafe], threshold: 1.0}
pipelines:
  check:
    - {name: guard, kind: moderate, gate: open, stop_if: deny}
    - {name: intent, kind: classify, instruction: "One of: {labels}", labels: [question, other]}
  blocked:
    - {name: guard, kind: moderate, gate: closed, stop_if: deny}
  hurried:
    - {name: guard, kind: moderate, gate: open, deadline_ms: 0.001}
  cut_short:
    - {name: reply, kind: format, max_tokens: 1, schema: {type: object, properties: {ok: {type: boolean}}}}
"""


@pytest.fixture(scope="module")
def piped(tiny_model_dir, tmp_path_factory):
    llm = tiny_llm(tiny_model_dir)
    ledger = Ledger(tmp_path_factory.mktemp("ledger") / "ledger.db", raw_text=True)
    options = GateOptions(gates=parse_gates(FILE, "gates.yaml"), ledger=ledger)
    with serving(build_app(llm, MODEL, gates=options), llm) as running:
        running.ledger = ledger
        yield running


def _error(r, status: int, code: str, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["param"] == param and error["message"]
    return r.json()


def test_a_pipeline_runs_and_every_step_is_recorded_with_the_clients_request_id(piped):
    r = piped.post("/v1/pipelines/check", json={"text": "is the museum open?", "userId": "u-9", "vars": {"a": 1}},
                   headers={"X-Request-Id": "client-req-7"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert r.headers["x-request-id"] == "client-req-7"
    assert set(data) >= {"trace_id", "blocked", "output", "steps"} and data["blocked"] is False
    assert data["output"] == "is the museum open?" and data["error"] is None
    assert [(s["name"], s["kind"]) for s in data["steps"]] == [("guard", "moderate"), ("intent", "classify")]
    assert all(set(s) >= {"name", "kind", "output", "latency_ms", "timed_out"} for s in data["steps"])
    assert piped.ledger.flush()
    conn = sqlite3.connect(piped.ledger.path)
    rows = conn.execute("SELECT step, client_request_id, user_sha256 FROM decisions WHERE trace_id = ? ORDER BY id",
                        (data["trace_id"],)).fetchall()
    assert [(s, c) for s, c, _ in rows] == [("guard", "client-req-7"), ("intent", "client-req-7")]
    assert all(u is not None for _, _, u in rows)


def test_without_a_request_id_header_none_is_recorded(piped):
    data = piped.post("/v1/pipelines/check", json={"text": "hi"}).json()
    assert piped.ledger.flush()
    ids = sqlite3.connect(piped.ledger.path).execute(
        "SELECT client_request_id FROM decisions WHERE trace_id = ?", (data["trace_id"],)).fetchall()
    assert ids == [(None,), (None,)]  # the server's own request id is not the client's


def test_a_blocked_pipeline_is_a_200_that_says_so(piped):
    data = piped.post("/v1/pipelines/blocked", json={"text": "hi"}).json()
    assert data["blocked"] is True and data["blocked_by"] == "guard" and data["output"] is None


def test_an_unknown_pipeline_is_a_404_naming_the_known_ones(piped):
    data = _error(piped.post("/v1/pipelines/nope", json={"text": "hi"}), 404, "pipeline_not_found", "name")
    assert "no pipeline named 'nope'; defined: blocked, check, cut_short, hurried" in data["error"]["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({}, "text"),
    ({"text": 5}, "text"),
    ({"text": "hi", "vars": [1]}, "vars"),
    ({"text": "hi", "userId": 3}, "userId"),
    ({"text": "hi", "colour": "red"}, "colour"),
])
def test_bad_bodies_are_400s_naming_the_field(piped, body, param):
    _error(piped.post("/v1/pipelines/check", json=body), 400, "invalid_value", param)


def test_malformed_and_empty_bodies_are_400s(piped):
    headers = {"Content-Type": "application/json"}
    assert _error(piped.post("/v1/pipelines/check", content=b"{", headers=headers), 400, "invalid_json")
    assert _error(piped.post("/v1/pipelines/check", content=b"", headers=headers), 400, "invalid_json")


def test_a_failing_step_is_an_error_naming_it_with_the_trace(piped):
    data = _error(piped.post("/v1/pipelines/hurried", json={"text": "hi"}), 504, "pipeline_timeout", "guard")
    assert data["trace_id"].startswith("trace-") and data["steps"][0]["timed_out"] is True
    data = _error(piped.post("/v1/pipelines/cut_short", json={"text": "hi"}), 502, "pipeline_invalid_output", "reply")
    assert "produced no valid JSON" in data["error"]["message"] and data["steps"][0]["output"]["schema_valid"] is False
    data = _error(piped.post("/v1/pipelines/check", json={"text": "word " * 5000}), 400, "pipeline_bad_input", "guard")
    assert "max_model_len" in data["error"]["message"]


def test_a_pipeline_that_needs_an_index_fails_at_start_up(tiny_model_dir):
    bad = FILE + "  rag:\n    - {name: search, kind: retrieve, index: docs}\n"
    with pytest.raises(PipelineFileError, match=r"gates.yaml:15: pipeline 'rag' step 'search' is a retrieve step: "
                                                r"it needs an index \(serve with --index"):
        build_app(tiny_llm(tiny_model_dir), MODEL, gates=GateOptions(gates=parse_gates(bad, "gates.yaml")))


def test_serve_refuses_an_invalid_pipeline_before_loading_the_model(tmp_path, capsys):
    from qwick.cli import main

    bad = tmp_path / "gates.yaml"
    bad.write_text("pipelines:\n  p:\n    - {kind: moderate, route_on: {allow: nowhere}}\n")
    assert main(["serve", str(tmp_path / "no-model-here"), "--gates", str(bad)]) == 2
    assert f"{bad}:3: pipeline 'p' step 'moderate': route_on 'allow' -> 'nowhere'" in capsys.readouterr().err
