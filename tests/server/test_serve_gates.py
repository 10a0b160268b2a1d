"""The gate endpoints and /v1/embeddings over HTTP: shapes, error paths, deadlines, ledger rows."""

from __future__ import annotations

import base64
import json
import sqlite3
import struct

import pytest
from serverkit import MODEL, serving, tiny_llm, wait_until

from qwick.gates.ledger import Ledger
from qwick.gates.loader import parse_gates
from qwick.server import build_app
from qwick.server.routes.gates import GateOptions

GATES = """\
gates:
  - name: hurry
    kind: moderate
    instruction: "Answer with one of: {labels}"
    labels: [safe, unsafe]
    deadline_ms: 0.001
    on_timeout: deny
  - name: topics
    kind: classify
    instruction: "Answer with one of: {labels}"
    labels: [sports, politics, food]
  - name: city
    kind: extract
    instruction: "Extract the city"
    max_tokens: 32
    schema: {type: object, properties: {city: {enum: [Paris, Rome]}}, required: [city], additionalProperties: false}
"""


@pytest.fixture(scope="module")
def gated(tiny_model_dir, tmp_path_factory):
    llm = tiny_llm(tiny_model_dir)
    path = tmp_path_factory.mktemp("ledger") / "ledger.db"
    ledger = Ledger(path, raw_text=True)
    options = GateOptions(gates=parse_gates(GATES, "gates.yaml"), ledger=ledger, ledger_all=True)
    with serving(build_app(llm, MODEL, gates=options), llm) as running:
        running.ledger = ledger
        yield running


def _rows(server, **where) -> list[dict]:
    assert server.ledger.flush()
    conn = sqlite3.connect(server.ledger.path)
    conn.row_factory = sqlite3.Row
    clause = " AND ".join(f"{k} = ?" for k in where) or "1"
    return [dict(r) for r in conn.execute(f"SELECT * FROM decisions WHERE {clause}", list(where.values()))]


def _ok(server, path: str, body: dict) -> dict:
    r = server.post(path, json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["request_id"] == r.headers["x-request-id"] and data["latency_ms"] > 0
    return data


def test_moderate(gated):
    data = _ok(gated, "/v1/moderate", {"text": "have a nice day", "userId": "u-1"})
    assert set(data) == {"allow", "reason", "gate", "escalate", "scores", "latency_ms", "request_id", "timed_out"}
    assert data["gate"] == "moderate" and data["timed_out"] is False
    assert sum(data["scores"].values()) == pytest.approx(1.0)
    assert data["reason"] == ("none" if data["allow"] else max((k for k in data["scores"] if k != "safe"),
                                                                 key=data["scores"].get))
    (row,) = _rows(gated, request_id=data["request_id"])
    assert row["decision"] == ("allow" if data["allow"] else "deny") and row["user_sha256"] is not None
    assert json.loads(row["input"]) == {"text": "have a nice day"}


def test_classify_with_a_gate_and_with_ad_hoc_labels(gated):
    data = _ok(gated, "/v1/classify", {"text": "the match ended 2-1", "gate": "topics"})
    assert set(data["scores"]) == {"sports", "politics", "food"} and data["label"] in data["scores"]
    data = _ok(gated, "/v1/classify", {"text": "ok", "labels": ["yes", "no"]})
    assert set(data["scores"]) == {"yes", "no"} and sum(data["scores"].values()) == pytest.approx(1.0)


def test_score_keeps_item_order(gated):
    items = ["Paris is in France", "Bananas", "A third document"]
    data = _ok(gated, "/v1/score", {"query": "capital of France", "items": items})
    assert len(data["scores"]) == 3 and all(0 < s < 1 for s in data["scores"])
    reversed_data = _ok(gated, "/v1/score", {"query": "capital of France", "items": items[::-1]})
    assert reversed_data["scores"] == pytest.approx(data["scores"][::-1], abs=1e-6)


def test_embeddings_openai_shape_dimensions_and_base64(gated):
    client = gated.client()
    out = client.embeddings.create(model=MODEL, input=["hello", "world"], dimensions=8)
    assert [d.index for d in out.data] == [0, 1] and len(out.data[0].embedding) == 8
    assert sum(x * x for x in out.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    assert out.usage.prompt_tokens == out.usage.total_tokens > 0
    raw = _ok_embed(gated, {"input": "hello", "dimensions": 8, "encoding_format": "base64"})
    decoded = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert decoded == pytest.approx(out.data[0].embedding, abs=1e-6)
    ids = _ok_embed(gated, {"input": [[9707, 151643]]})
    assert len(ids["data"][0]["embedding"]) == 64


def _ok_embed(server, body: dict) -> dict:
    r = server.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_rewrite_and_extract_use_schema_constrained_generation(gated):
    data = _ok(gated, "/v1/rewrite", {"text": "cheap laptp chrger"})
    assert {"rewrite", "reason_code", "schema_valid", "output", "escalate", "timed_out"} <= set(data)
    assert isinstance(data["rewrite"], str) and isinstance(data["schema_valid"], bool)
    if not data["schema_valid"]:  # a random tiny model may run out of tokens: the query passes through
        assert data["rewrite"] == "cheap laptp chrger" and data["escalate"] is True
    data = _ok(gated, "/v1/extract", {"text": "I live in Rome", "gate": "city"})
    assert data["schema_valid"] is True and data["data"]["city"] in ("Paris", "Rome")
    (row,) = _rows(gated, request_id=data["request_id"])
    assert row["schema_valid"] == 1 and row["output_tokens"] > 0 and row["decision"] == "valid"


def test_a_missed_deadline_answers_by_policy_and_frees_the_engine(gated):
    data = _ok(gated, "/v1/moderate", {"text": "a long text " * 100, "gate": "hurry"})
    assert data["timed_out"] is True and data["allow"] is False and data["reason"] == "timeout"
    assert wait_until(lambda: not gated.llm.engine.has_unfinished())
    (row,) = _rows(gated, request_id=data["request_id"])
    assert row["decision"] == "timeout:deny" and row["timed_out"] == 1


def test_gate_metrics_count_decisions_timeouts_errors_and_latency(gated):
    def count(name: str, **labels: str) -> float:
        return gated.metric(name, model_name=MODEL, **labels)

    before = {o: count("qwick:gate_requests_total", gate="moderate", outcome=o) for o in ("allow", "deny")}
    latency_before = count("qwick:gate_latency_seconds_count", gate="moderate", kind="moderate")
    moderated = _ok(gated, "/v1/moderate", {"text": "hello there"})
    outcome = "allow" if moderated["allow"] else "deny"
    assert count("qwick:gate_requests_total", gate="moderate", outcome=outcome) == before[outcome] + 1
    assert count("qwick:gate_latency_seconds_count", gate="moderate", kind="moderate") == latency_before + 1

    classified_before = count("qwick:gate_requests_total", gate="topics", kind="classify", outcome="ok")
    _ok(gated, "/v1/classify", {"text": "the match last night", "gate": "topics"})
    assert count("qwick:gate_requests_total", gate="topics", kind="classify", outcome="ok") == classified_before + 1

    timeouts_before = count("qwick:gate_requests_total", gate="hurry", outcome="timeout")
    _ok(gated, "/v1/moderate", {"text": "a long text " * 100, "gate": "hurry"})  # deadline 1 us: always late
    assert count("qwick:gate_requests_total", gate="hurry", outcome="timeout") == timeouts_before + 1
    assert wait_until(lambda: not gated.llm.engine.has_unfinished())

    errors_before = count("qwick:gate_errors_total", endpoint="classify")
    assert gated.post("/v1/classify", json={"text": "x", "gate": "no-such-gate"}).status_code == 404
    assert count("qwick:gate_errors_total", endpoint="classify") == errors_before + 1
    assert 'gate="no-such-gate"' not in gated.get("/metrics").text  # client text never becomes a label value


def test_ledger_all_records_completions(gated):
    r = gated.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    assert r.status_code == 200
    rows = _rows(gated, kind="completion")
    assert rows and rows[-1]["output_tokens"] == 2 and rows[-1]["gate"] is None


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/v1/moderate", {"text": "x", "gate": "nope"}, 404, "gate"),
    ("/v1/moderate", {"text": 3}, 400, "text"),
    ("/v1/moderate", {"txt": "x"}, 400, "txt"),
    ("/v1/moderate", {"text": "x", "gate": "topics"}, 400, None),
    ("/v1/moderate", {"text": "x", "model": "other"}, 404, "model"),
    ("/v1/classify", {"text": "x", "labels": ["a"]}, 400, "labels"),
    ("/v1/classify", {"text": "x", "labels": ["a", "a"]}, 400, "labels"),
    ("/v1/classify", {"text": "x", "labels": ["h", "hate"]}, 400, "labels"),
    ("/v1/classify", {"text": "word " * 2000}, 400, None),
    ("/v1/score", {"query": "q", "items": []}, 400, "items"),
    ("/v1/score", {"query": "q"}, 400, "items"),
    ("/v1/rewrite", {}, 400, "text"),
    ("/v1/extract", {"text": "x"}, 400, "gate"),
    ("/v1/extract", {"text": "x", "gate": ""}, 400, "gate"),  # "" must not fall back to the rewrite gate
    ("/v1/moderate", {"text": "x", "gate": ""}, 400, "gate"),
    ("/v1/score", {"query": "q", "items": ["a"], "gate": ""}, 400, "gate"),
    ("/v1/extract", {"text": "x", "gate": "topics"}, 400, None),
    ("/v1/embeddings", {"input": ""}, 400, "input"),
    ("/v1/embeddings", {"input": []}, 400, "input"),
    ("/v1/embeddings", {"input": [[-1]]}, 400, "input"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, 400, "dimensions"),
    ("/v1/embeddings", {"input": "x", "dimensions": 65}, 400, "dimensions"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
])
def test_error_paths_are_openai_shaped(gated, path, body, status, param):
    r = gated.post(path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param


def test_malformed_json_is_a_400(gated):
    r = gated.post("/v1/moderate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_the_default_server_has_the_builtin_gates(server):
    data = server.post("/v1/classify", json={"text": "I want to buy shoes"}).json()
    assert set(data["scores"]) == {"question", "purchase", "support", "complaint", "other"}


def test_serve_refuses_an_invalid_gates_file_before_loading_the_model(tmp_path, capsys):
    from qwick.cli import main

    bad = tmp_path / "gates.yaml"
    bad.write_text("gates:\n  - name: g\n    kind: moderate\n    instruction: x\n    labels: [safe, bad]\n"
                   "    threshold: 7\n")
    assert main(["serve", str(tmp_path / "no-model-here"), "--gates", str(bad)]) == 2
    assert f"{bad}:6: gate 'g': threshold must be a number in [0, 1], got 7" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "no-model-here"), "--ledger-all"]) == 2
    assert "--ledger-all and --ledger-raw-text need --ledger PATH" in capsys.readouterr().err


def test_serve_refuses_a_bad_ledger_path_in_one_line_before_loading_the_model(tmp_path, capsys):
    from qwick.cli import main

    missing = tmp_path / "no-such-folder" / "ledger.db"
    assert main(["serve", str(tmp_path / "no-model-here"), "--ledger", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qwick: error: cannot open the ledger {missing}: unable to open database file")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_gate_setup_that_fails_in_build_app_leaves_no_engine_thread(tiny_model_dir):
    import threading

    from qwick.gates.loader import GateFileError

    def engine_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "qwick-engine-loop"}

    bad = GATES.replace("labels: [sports, politics, food]", "labels: [self, self_harm]")  # "self" prefixes "self_harm"
    before = engine_threads()
    with pytest.raises(GateFileError, match="prefix"):
        build_app(tiny_llm(tiny_model_dir), MODEL, gates=GateOptions(gates=parse_gates(bad, "gates.yaml")))
    assert engine_threads() == before


def test_a_gate_aborted_by_shutdown_is_a_503_and_an_engine_failure_stays_a_500():
    from qwick.engine.client import RequestFailedError
    from qwick.server.errors import APIError
    from qwick.server.routes.gates import gate_error

    error = gate_error(RequestFailedError("request 'x' was aborted before its result was ready"))
    assert isinstance(error, APIError) and error.status == 503 and error.code == "aborted"
    failed = RequestFailedError("the engine failed while running request 'x'")
    failed.__cause__ = RuntimeError("boom")
    assert gate_error(failed) is failed  # our bug: a logged 500
