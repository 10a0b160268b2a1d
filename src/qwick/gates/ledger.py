"""The decision ledger: every gate decision (and with --ledger-all every completion) as a row in SQLite.

The hot path only puts a record on a bounded queue (never blocks, never touches disk); one background thread
writes batches, one transaction each, in WAL mode. When the queue is full the record is dropped and counted
(logged, and stored in the `meta` table as `dropped`). After `kill -9` the database is intact and holds every
committed batch: what is lost is what was still queued or being written (at most one batch, ~`flush_interval`
of traffic). Raw texts are stored only with `raw_text=True` (off by default: privacy); hashes always are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

logger = logging.getLogger("qwick.ledger")
SCHEMA_VERSION = "3"  # 2: the adapter columns; 3: pipeline traces, rule traces, parameters (older files gain them)

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,               -- unix time (seconds) of the decision
    kind TEXT NOT NULL,             -- moderate | classify | rewrite | score | extract | completion
    gate TEXT,                      -- the gate's name (NULL for completions)
    model TEXT NOT NULL,
    revision TEXT,
    weights_sha256 TEXT NOT NULL,   -- of the safetensors files, computed once at load ("dummy:SEED" for dummy weights)
    prompt_sha256 TEXT NOT NULL,    -- of the rendered prompt(s), UTF-8
    output_sha256 TEXT NOT NULL,    -- of the canonical JSON of the output (decision + scores, or the text)
    decision TEXT NOT NULL,         -- allow | deny | a label | scored | valid | invalid | timeout:POLICY | finish reason
    escalate INTEGER NOT NULL,
    timed_out INTEGER NOT NULL,
    scores TEXT,                    -- JSON: {label: p} or [p, ...]
    schema_valid INTEGER,           -- rewrite/extract: 1 or 0; NULL when no schema applies
    latency_ms REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    gate_config TEXT,               -- JSON of the gate definition used (replay needs it)
    user_sha256 TEXT,               -- of the request's userId, if any
    input TEXT,                     -- raw inputs as JSON: only with raw text storage on
    output_text TEXT,               -- raw output: only with raw text storage on
    adapter TEXT,                   -- the LoRA adapter the gate ran under (NULL: the base model)
    adapter_sha256 TEXT             -- of the adapter's weight files
);
CREATE INDEX IF NOT EXISTS decisions_request_id ON decisions (request_id);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class LedgerRecord:
    request_id: str
    ts: float
    kind: str
    gate: str | None
    model: str
    revision: str | None
    weights_sha256: str
    prompt_sha256: str
    output_sha256: str
    decision: str
    escalate: bool
    timed_out: bool
    scores: Any  # JSON-serialisable
    schema_valid: bool | None
    latency_ms: float
    prompt_tokens: int
    output_tokens: int
    gate_config: str | None = None
    user_sha256: str | None = None
    input: Any = None  # raw inputs; dropped unless the ledger stores raw text
    output_text: str | None = None
    adapter: str | None = None
    adapter_sha256: str | None = None
    trace_id: str | None = None  # the pipeline run this row is a step of (qwick.pipelines)
    pipeline: str | None = None
    step: str | None = None  # the step's name in its pipeline
    client_request_id: str | None = None  # the client's X-Request-Id, where it sent one
    rule: Any = None  # JSON: which rule decided (threshold, label, probability; timeout policy)
    params: Any = None  # JSON: the request's parameters (sampling parameters, retrieval settings, dimensions)


@dataclass(frozen=True)
class StepTrace:
    """Where a row stands in a pipeline run: its trace id, pipeline, step and the client's request id."""

    trace_id: str
    pipeline: str
    step: str
    client_request_id: str | None = None


def trace_fields(trace: StepTrace | None) -> dict[str, str | None]:
    """A LedgerRecord's pipeline fields for a step of `trace` (none outside pipelines)."""
    if trace is None:
        return {}
    return {"trace_id": trace.trace_id, "pipeline": trace.pipeline, "step": trace.step,
            "client_request_id": trace.client_request_id}


# columns added after schema version 1, with their types: opening an older ledger adds them (the CREATE TABLE
# above is version 2's; the columns after it arrive only this way, so old and new files end up alike)
ADDED_COLUMNS = {"adapter": "TEXT", "adapter_sha256": "TEXT", "trace_id": "TEXT", "pipeline": "TEXT",
                 "step": "TEXT", "client_request_id": "TEXT", "rule": "TEXT", "params": "TEXT"}
JSON_FIELDS = ("scores", "input", "rule", "params")
COLUMNS = tuple(f.name for f in fields(LedgerRecord))


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) a ledger database in WAL mode."""
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash (kill -9)
    conn.executescript(SCHEMA)
    present = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
    for name, kind in ADDED_COLUMNS.items():
        if name not in present:  # a ledger written by an older qwick: same rows, new columns NULL
            conn.execute(f"ALTER TABLE decisions ADD COLUMN {name} {kind}")
    conn.execute("CREATE INDEX IF NOT EXISTS decisions_trace_id ON decisions (trace_id)")
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    conn.commit()
    return conn


class LedgerError(ValueError):
    """The ledger file cannot be opened (a missing folder, no permission, not a SQLite file)."""


class Ledger:
    """Bounded-queue background writer. `record` never blocks: it returns False when the record was dropped."""

    def __init__(self, path: str | Path, *, raw_text: bool = False, max_queue: int = 10_000,
                 batch_size: int = 512, flush_interval: float = 0.05) -> None:
        self.path = Path(path)
        self.raw_text = raw_text
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        try:  # opened here so a bad path fails at start-up, not in the thread
            self._conn = open_db(self.path)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc} (give a writable file in an existing "
                              "folder)") from None
        self._queue: queue.Queue[LedgerRecord | None] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self.dropped = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="qwick-ledger", daemon=True)
        self._thread.start()

    def record(self, record: LedgerRecord) -> bool:
        if not self.raw_text:
            record.input, record.output_text = None, None
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
                dropped = self.dropped
            if dropped == 1 or dropped % 1000 == 0:
                logger.warning("ledger queue full: %d record(s) dropped so far (the writer cannot keep up)", dropped)
            return False

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is committed (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        conn = self._conn
        insert = f"INSERT INTO decisions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        stop = False
        while not stop:
            first = self._queue.get()
            batch = [first]
            deadline = time.monotonic() + self.flush_interval
            while len(batch) < self.batch_size:  # gather a batch: fewer, larger transactions
                remaining = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [r for r in batch if r is not None]
            stop = len(records) < len(batch)
            try:
                conn.executemany(insert, [_row(r) for r in records])
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)", (str(self.dropped),))
                conn.commit()
                self.written += len(records)
            except sqlite3.Error:
                logger.exception("ledger: writing %d record(s) to %s failed; they are lost", len(records), self.path)
                with self._lock:
                    self.dropped += len(records)
            finally:
                for _ in batch:
                    self._queue.task_done()
        conn.close()


def _row(record: LedgerRecord) -> tuple[Any, ...]:
    data = asdict(record)
    for key in JSON_FIELDS:
        if data[key] is not None:
            data[key] = json.dumps(data[key], ensure_ascii=False)
    for key in ("escalate", "timed_out", "schema_valid"):
        if data[key] is not None:
            data[key] = int(data[key])
    return tuple(data[c] for c in COLUMNS)
