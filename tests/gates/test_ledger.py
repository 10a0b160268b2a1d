"""The ledger: complete rows, privacy default, never blocking (drops counted), kill -9 safety, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from qwick.cli import main
from qwick.gates.ledger import COLUMNS, Ledger, LedgerRecord
from qwick.gates.loader import load_gates

NOT_NULL = ("request_id", "ts", "kind", "model", "weights_sha256", "prompt_sha256", "output_sha256", "decision",
            "escalate", "timed_out", "latency_ms", "prompt_tokens", "output_tokens")


def _rows(path) -> list[dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute("SELECT * FROM decisions ORDER BY id")]


def _record(i: int) -> LedgerRecord:
    return LedgerRecord(request_id=f"r{i}", ts=time.time(), kind="moderate", gate="g", model="m", revision=None,
                        weights_sha256="w", prompt_sha256="p", output_sha256="o", decision="allow", escalate=False,
                        timed_out=False, scores={"safe": 1.0}, schema_valid=None, latency_ms=1.0, prompt_tokens=3,
                        output_tokens=0, input={"text": "secret"}, output_text="secret")


def test_gate_decisions_are_recorded_completely_and_correctly(llm, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    tasks = llm.new_gates(load_gates(None), ledger)
    decision = tasks.moderate("hello there")
    scored = tasks.score("q", ["a", "b"])
    assert ledger.flush()
    rows = _rows(tmp_path / "l.db")
    assert [r["kind"] for r in rows] == ["moderate", "score"]
    row = rows[0]
    assert all(row[c] is not None for c in NOT_NULL)
    assert row["request_id"] == decision.request_id and row["gate"] == "moderate"
    assert row["decision"] == ("allow" if decision.allow else "deny")
    assert json.loads(row["scores"]) == pytest.approx(decision.scores)
    assert row["model"] == str(llm.model_name)
    weights = hashlib.sha256((llm.model_path / "model.safetensors").read_bytes()).hexdigest()
    assert row["weights_sha256"] == weights  # the published-hash convention: sha256 of the file
    rendered = tasks.service.gates["moderate"]
    prompt = llm.get_tokenizer().apply_chat_template(
        [{"role": "system", "content": rendered.system_prompt()}, {"role": "user", "content": "hello there"}],
        add_generation_prompt=True, enable_thinking=False)
    assert row["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()
    assert row["prompt_tokens"] == len(llm.get_tokenizer().encode(prompt)) and row["output_tokens"] == 0
    assert json.loads(row["gate_config"])["labels"] == list(rendered.labels)
    assert row["input"] is None and row["output_text"] is None  # raw text is off by default
    assert json.loads(rows[1]["scores"]) == pytest.approx(scored)
    ledger.close()


def test_raw_text_is_stored_only_when_asked(tmp_path):
    for raw in (False, True):
        ledger = Ledger(tmp_path / f"{raw}.db", raw_text=raw)
        ledger.record(_record(0))
        ledger.close()
        row = _rows(tmp_path / f"{raw}.db")[0]
        assert (row["input"], row["output_text"]) == ((json.dumps({"text": "secret"}), "secret") if raw else (None, None))


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    path = tmp_path / "l.db"
    ledger = Ledger(path, max_queue=4, batch_size=1)
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer cannot commit: its queue fills up
    start = time.perf_counter()
    accepted = [ledger.record(_record(i)) for i in range(200)]
    assert time.perf_counter() - start < 0.5  # never waits on the disk
    assert not all(accepted) and ledger.dropped == accepted.count(False) > 0
    blocker.rollback()
    assert ledger.flush()
    ledger.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == accepted.count(True)
    assert conn.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()[0] == str(ledger.dropped)


def test_kill_9_loses_at_most_the_uncommitted_batch(tmp_path):
    path = tmp_path / "crash.db"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_ledger import _record
        from qwick.gates.ledger import Ledger
        ledger = Ledger({str(path)!r}, batch_size=64)
        i = 0
        while True:
            for _ in range(50):
                ledger.record(_record(i)); i += 1
            if ledger.flush():
                print(ledger.written, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    try:
        while acknowledged < 1000:
            line = proc.stdout.readline()
            assert line, "the writer process died"
            acknowledged = int(line)
        for _ in range(20):  # keep it writing mid-batch, then kill it hard
            ledger_line = proc.stdout.readline()
            acknowledged = int(ledger_line or acknowledged)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM decisions").fetchall()
    assert len(rows) >= acknowledged
    assert [r[0] for r in rows] == [f"r{i}" for i in range(len(rows))]  # a prefix, in order, nothing torn
    assert all(r[COLUMNS.index(c)] is not None for r in rows for c in NOT_NULL)


def test_ledger_cli_tail_query_stats_and_replay(llm, tmp_path, capsys):
    path = tmp_path / "l.db"
    ledger = Ledger(path, raw_text=True)
    tasks = llm.new_gates(load_gates(None), ledger)
    first = tasks.moderate("you are wonderful")
    tasks.classify("refund please", ["purchase", "complaint"])
    ledger.close()
    capsys.readouterr()
    assert main(["ledger", "tail", "--ledger", str(path), "-n", "5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in lines] == ["moderate", "classify"]
    assert main(["ledger", "query", "--ledger", str(path), "--kind", "classify", "--since", "1h"]) == 0
    (hit,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert hit["decision"] in ("purchase", "complaint")
    assert main(["ledger", "stats", "--ledger", str(path)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows"] == 2 and stats["dropped"] == 0 and stats["gates"]["moderate"]["count"] == 1
    code = main(["ledger", "replay", first.request_id, "--ledger", str(path), "--model", str(llm.model_path),
                 "--dtype", "float32"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["match"] and report["same_weights"] and report["max_score_diff"] < 1e-6


def test_replay_of_a_record_without_raw_text_explains_why_not(llm, tmp_path, capsys):
    path = tmp_path / "l.db"
    ledger = Ledger(path)
    decision = llm.new_gates(load_gates(None), ledger).moderate("hi")
    ledger.close()
    assert main(["ledger", "replay", decision.request_id, "--ledger", str(path)]) == 2
    assert "replay needs records written with `qwick serve --ledger-raw-text`" in capsys.readouterr().err
    assert main(["ledger", "tail", "--ledger", str(tmp_path / "missing.db")]) == 2
    assert "no ledger at" in capsys.readouterr().err


def test_a_ledger_from_schema_version_1_gains_the_adapter_columns_and_keeps_its_rows(tmp_path):
    from qwick.gates.ledger import ADDED_COLUMNS, SCHEMA, SCHEMA_VERSION

    path = tmp_path / "v1.db"
    old_schema = SCHEMA.replace("output_text TEXT,", "output_text TEXT").replace(
        "    adapter TEXT,                   -- the LoRA adapter the gate ran under (NULL: the base model)\n", "").replace(
        "    adapter_sha256 TEXT             -- of the adapter's weight files\n", "")
    conn = sqlite3.connect(path)
    conn.executescript(old_schema)
    assert not set(ADDED_COLUMNS) & {r[1] for r in conn.execute("PRAGMA table_info(decisions)")}
    old_columns = [c for c in COLUMNS if c not in ADDED_COLUMNS]
    conn.execute(f"INSERT INTO decisions ({', '.join(old_columns)}) VALUES ({', '.join('?' * len(old_columns))})",
                 ["old", 1.0, "moderate", "moderate", "m", None, "w", "p", "o", "allow", 0, 0, None, None, 1.0, 1, 0,
                  None, None, None, None])
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.commit()
    conn.close()
    ledger = Ledger(path)
    new = _record(1)
    new.adapter, new.adapter_sha256 = "guard", "ab" * 32
    ledger.record(new)
    ledger.close()
    rows = {r["request_id"]: r for r in _rows(path)}
    assert rows["old"]["decision"] == "allow" and rows["old"]["adapter"] is None
    assert (rows[new.request_id]["adapter"], rows[new.request_id]["adapter_sha256"]) == ("guard", "ab" * 32)
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert version == SCHEMA_VERSION
