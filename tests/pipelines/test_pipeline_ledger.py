"""Pipelines in the ledger: a row per step under one trace id with its rule trace and the client's request id,
`qwick ledger query/replay --trace-id`, old ledger files migrated; completions' sampling parameters and
embedding rows."""

from __future__ import annotations

import json
import sqlite3

from pipeline_fakes import FakeRetrieval

from qwick.cli import main
from qwick.engine.sync_engine import run_sync
from qwick.gates.identity import ModelIdentity
from qwick.gates.ledger import COLUMNS, SCHEMA, SCHEMA_VERSION, Ledger, LedgerRecord, StepTrace, trace_fields
from qwick.gates.ledger_query import connect, trace
from qwick.gates.loader import parse_gates
from qwick.gates.recording import RecordingClient
from qwick.pipelines.loader import parse_pipelines
from qwick.pipelines.runner import PipelineRunner
from qwick.sampling_params import SamplingParams

GATES = """\
gates:
  - {name: open, kind: moderate, instruction: "One of: {labels}", labels: [safe, unsafe], threshold: THRESHOLD}
  - {name: topic, kind: classify, instruction: "One of: {labels}", labels: [sports, food]}
"""
PIPELINES = """\
pipelines:
  search:
    - {name: guard, kind: moderate, gate: open, stop_if: deny}
    - {name: intent, kind: classify, gate: topic}
    - {name: find, kind: retrieve, index: docs, top_k: 2}
    - {name: reply, kind: answer}
  slow:
    - {name: find, kind: retrieve, index: docs, deadline_ms: 30, on_timeout: skip}
"""


def _file(threshold: float) -> str:
    return GATES.replace("THRESHOLD", str(threshold)) + PIPELINES


def _run(llm, ledger, name="search", retrieval=None, **kwargs):
    gates = parse_gates(_file(0.0), "g.yaml")
    runner = PipelineRunner(llm.new_gates(gates, ledger).service, parse_pipelines(gates), retrieval or FakeRetrieval())
    result = run_sync(runner.run(name, "where is the station", **kwargs))
    assert ledger.flush()
    return result


def test_every_step_is_a_row_with_the_trace_id_its_rule_and_the_client_request_id(llm, tmp_path):
    ledger = Ledger(tmp_path / "l.db", raw_text=True)
    result = _run(llm, ledger, user_id="u-1", client_request_id="client-42")
    rows = trace(connect(ledger.path), result.trace_id)
    assert [(r["step"], r["kind"]) for r in rows] == [("guard", "moderate"), ("intent", "classify"),
                                                     ("find", "retrieve"), ("reply", "answer")]
    assert {r["trace_id"] for r in rows} == {result.trace_id} and {r["pipeline"] for r in rows} == {"search"}
    assert {r["client_request_id"] for r in rows} == {"client-42"}
    assert [r["request_id"] for r in rows] == [f"{result.trace_id}.{s}" for s in ("guard", "intent", "find", "reply")]
    guard, intent, find, reply = rows
    assert guard["rule"]["threshold"] == 0.0 and guard["rule"]["decided"] == "allow" == guard["decision"]
    assert guard["rule"]["p"] == guard["scores"]["safe"] and guard["user_sha256"] is not None
    assert intent["rule"]["label"] == intent["decision"] == result.steps[1].label
    assert find["params"] == {"index": "docs", "top_k": 2, "mode": "hybrid", "rerank": False}
    assert find["decision"] == "found" and find["scores"] == [1.0, 0.9] and find["input"] == {"query": "where is the station"}
    assert reply["output_text"] == result.output["answer"] and reply["rule"]["cited"] == ["doc0#0"]
    ledger.close()


def test_a_timed_out_step_is_a_row_too(llm, tmp_path):
    ledger = Ledger(tmp_path / "l.db", raw_text=True)
    result = _run(llm, ledger, "slow", FakeRetrieval(delay=5.0))
    (row,) = trace(connect(ledger.path), result.trace_id)
    assert row["decision"] == "timeout:skip" and row["timed_out"] and row["rule"]["deadline"] == "step"
    ledger.close()


def test_ledger_query_and_replay_by_trace_id(llm, tmp_path, capsys):
    path = tmp_path / "l.db"
    ledger = Ledger(path, raw_text=True)
    result = _run(llm, ledger)
    ledger.close()
    capsys.readouterr()
    assert main(["ledger", "query", "--ledger", str(path), "--trace-id", result.trace_id]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["step"] for x in lines] == ["guard", "intent", "find", "reply"]  # the whole run, in order
    replay = ["ledger", "replay", "--trace-id", result.trace_id, "--ledger", str(path), "--model",
              str(llm.model_path), "--dtype", "float32"]
    assert main(replay) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["match"] and report["changed"] == [] and report["same_weights"]
    assert [(s["step"], s["match"]) for s in report["steps"]] == [("guard", True), ("intent", True), ("find", None),
                                                                  ("reply", None)]
    assert "not replayed" in report["steps"][2]["note"]
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(_file(1.0))  # the same gates, the moderation threshold raised
    assert main([*replay, "--gates", str(stricter)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["changed"] == ["guard"] and not report["match"]
    guard = report["steps"][0]
    assert (guard["recorded"]["decision"], guard["replayed"]["decision"]) == ("allow", "deny")


def test_replay_by_trace_id_explains_what_is_missing(llm, tmp_path, capsys):
    path = tmp_path / "l.db"
    ledger = Ledger(path)  # no raw text
    result = _run(llm, ledger)
    ledger.close()
    assert main(["ledger", "replay", "--trace-id", result.trace_id, "--ledger", str(path)]) == 2
    assert "recorded without its texts" in capsys.readouterr().err
    assert main(["ledger", "replay", "--trace-id", "trace-none", "--ledger", str(path)]) == 2
    assert "no ledger rows with trace id 'trace-none'" in capsys.readouterr().err
    assert main(["ledger", "replay", "--ledger", str(path)]) == 2
    assert "give either a REQUEST_ID or --trace-id" in capsys.readouterr().err


def test_a_ledger_written_before_pipelines_gains_their_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)  # version 2's table: no trace, rule or params columns
    v2 = [c for c in COLUMNS if c not in ("trace_id", "pipeline", "step", "client_request_id", "rule", "params")]
    assert {r[1] for r in conn.execute("PRAGMA table_info(decisions)")} == {"id", *v2}
    conn.execute(f"INSERT INTO decisions ({', '.join(v2)}) VALUES ({', '.join('?' * len(v2))})",
                 ["old", 1.0, "moderate", "moderate", "m", None, "w", "p", "o", "allow", 0, 0, None, None, 1.0, 1, 0,
                  None, None, None, None, None, None])
    conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    conn.commit()
    conn.close()
    assert trace(connect(path), "t") == []  # read-only: not migrated, and no traces in it
    ledger = Ledger(path)
    ledger.record(LedgerRecord(request_id="new", ts=2.0, kind="retrieve", gate=None, model="m", revision=None,
                               weights_sha256="w", prompt_sha256="p", output_sha256="o", decision="found",
                               escalate=False, timed_out=False, scores=[0.5], schema_valid=None, latency_ms=1.0,
                               prompt_tokens=0, output_tokens=0, rule={"rule": "r"}, params={"top_k": 1},
                               **trace_fields(StepTrace("t", "p", "s", "req-1"))))
    ledger.close()
    (row,) = trace(connect(path), "t")
    assert (row["request_id"], row["step"], row["client_request_id"], row["params"]) == ("new", "s", "req-1", {"top_k": 1})
    old = sqlite3.connect(path).execute("SELECT decision, trace_id FROM decisions WHERE request_id = 'old'").fetchone()
    assert old == ("allow", None)
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert version == SCHEMA_VERSION == "3"


def test_recorded_completions_carry_their_sampling_parameters(llm, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    client = RecordingClient(llm.client, ledger, ModelIdentity("m", None, "w"), llm.get_tokenizer())
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=3, seed=5, stop=["\n"])

    async def complete() -> None:
        async for _ in client.generate(llm.get_tokenizer().encode("hello"), params, "c-1", "hello"):
            pass

    run_sync(complete())
    assert ledger.flush()
    (row,) = connect(ledger.path).execute("SELECT params, kind FROM decisions").fetchall()
    recorded = json.loads(row["params"])
    assert row["kind"] == "completion"
    assert {k: recorded[k] for k in ("temperature", "top_p", "max_tokens", "seed", "stop", "n")} == {
        "temperature": 0.7, "top_p": 0.9, "max_tokens": 3, "seed": 5, "stop": ["\n"], "n": 1}
    ledger.close()


def test_embedding_calls_get_a_row_each(llm, tmp_path):
    ledger = Ledger(tmp_path / "l.db", raw_text=True)
    gates = llm.new_gates(ledger=ledger)
    vectors = gates.embed(["a short text", "another"], dimensions=8)
    gates.service.record_embeddings = False  # `qwick serve` without --ledger-all
    gates.embed(["not recorded"])
    assert ledger.flush()
    rows = [dict(r) for r in connect(ledger.path).execute("SELECT * FROM decisions")]
    assert len(rows) == 1 and rows[0]["kind"] == "embedding" and rows[0]["decision"] == "embedded"
    assert json.loads(rows[0]["params"]) == {"inputs": 2, "dimensions": 8} and len(vectors) == 2
    assert json.loads(rows[0]["input"]) == {"input": ["a short text", "another"]} and rows[0]["prompt_tokens"] > 2
    ledger.close()


def test_ledger_stats_count_rows_without_a_gate_per_kind(llm, tmp_path, capsys):
    path = tmp_path / "l.db"
    ledger = Ledger(path)
    _run(llm, ledger)
    llm.new_gates(ledger=ledger).embed("one")
    ledger.close()
    capsys.readouterr()
    assert main(["ledger", "stats", "--ledger", str(path)]) == 0
    gates = json.loads(capsys.readouterr().out)["gates"]
    assert {name: g["count"] for name, g in gates.items()} == {"open": 1, "topic": 1, "(retrieve)": 1, "(answer)": 1,
                                                                "(embedding)": 1}
