"""Reading the ledger: filtered rows, summary statistics, one request's row (for replay)."""

from __future__ import annotations

import json
import sqlite3
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# rows without a gate are counted per kind: "(completions)", "(embedding)", "(retrieve)", "(answer)"
_GROUP = "COALESCE(gate, CASE kind WHEN 'completion' THEN '(completions)' ELSE '(' || kind || ')' END)"
JSON_COLUMNS = ("scores", "input", "gate_config", "rule", "params")


@dataclass
class Filters:
    gate: str | None = None
    kind: str | None = None
    decision: str | None = None
    request_id: str | None = None
    since: float | None = None  # unix time
    escalated: bool = False
    timed_out: bool = False
    limit: int = 100
    trace_id: str | None = None  # a pipeline run: its rows in run order (oldest first)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open an existing ledger read-only (a running server may be writing it: WAL allows that)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ledger at {path}: start `qwick serve --ledger {path}` first")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    conn.row_factory = sqlite3.Row
    return conn


def as_dict(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    for key in JSON_COLUMNS:
        if data.get(key) is not None:
            data[key] = json.loads(data[key])
    for key in ("escalate", "timed_out", "schema_valid"):
        if data.get(key) is not None:
            data[key] = bool(data[key])
    return data


def query(conn: sqlite3.Connection, f: Filters) -> list[dict[str, Any]]:
    """Newest first (a trace's rows: in run order)."""
    if f.trace_id is not None and not has_column(conn, "trace_id"):
        return []  # a ledger written before pipelines (opened read-only here, so not migrated) has no traces
    where, args = [], []
    for column in ("gate", "kind", "decision", "request_id", "trace_id"):
        value = getattr(f, column)
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if f.since is not None:
        where.append("ts >= ?")
        args.append(f.since)
    if f.escalated:
        where.append("escalate = 1")
    if f.timed_out:
        where.append("timed_out = 1")
    sql = "SELECT * FROM decisions" + (" WHERE " + " AND ".join(where) if where else "")
    order = "ASC" if f.trace_id is not None else "DESC"
    rows = conn.execute(sql + f" ORDER BY id {order} LIMIT ?", [*args, f.limit]).fetchall()
    return [as_dict(r) for r in rows]


def tail(conn: sqlite3.Connection, n: int) -> list[dict[str, Any]]:
    """The last n rows, oldest first (like `tail`)."""
    rows = conn.execute("SELECT * FROM decisions ORDER BY id DESC LIMIT ?", (n,)).fetchall()
    return [as_dict(r) for r in reversed(rows)]


def find(conn: sqlite3.Connection, request_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM decisions WHERE request_id = ? ORDER BY id DESC LIMIT 1", (request_id,)).fetchone()
    return as_dict(row) if row is not None else None


def trace(conn: sqlite3.Connection, trace_id: str) -> list[dict[str, Any]]:
    """Every row of one pipeline run, in run order."""
    if not has_column(conn, "trace_id"):
        return []
    rows = conn.execute("SELECT * FROM decisions WHERE trace_id = ? ORDER BY id", (trace_id,)).fetchall()
    return [as_dict(r) for r in rows]


def has_column(conn: sqlite3.Connection, name: str) -> bool:
    return any(row[1] == name for row in conn.execute("PRAGMA table_info(decisions)"))


def stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """Counts per gate and decision, escalation/timeout rates, latency percentiles, dropped records."""
    total = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    gates: dict[str, Any] = {}
    for name, kind in conn.execute(f"SELECT DISTINCT {_GROUP}, kind FROM decisions"):
        rows = conn.execute("SELECT decision, escalate, timed_out, latency_ms FROM decisions "
                            f"WHERE {_GROUP} = ? AND kind = ?", (name, kind)).fetchall()
        latencies = sorted(r[3] for r in rows)
        decisions: dict[str, int] = {}
        for r in rows:
            decisions[r[0]] = decisions.get(r[0], 0) + 1
        gates[name] = {
            "kind": kind, "count": len(rows), "decisions": decisions,
            "escalated": sum(r[1] for r in rows), "timed_out": sum(r[2] for r in rows),
            "latency_ms_p50": _percentile(latencies, 0.5), "latency_ms_p95": _percentile(latencies, 0.95),
        }
    first_last = conn.execute("SELECT MIN(ts), MAX(ts) FROM decisions").fetchone()
    return {"rows": total, "dropped": int(meta.get("dropped", 0)), "first_ts": first_last[0],
            "last_ts": first_last[1], "gates": gates}


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    if len(ordered) == 1:
        return round(ordered[0], 3)
    return round(statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1], 3)
