"""`qwick ledger tail | query | stats | replay ID`: read the decision ledger, re-run a recorded decision."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwick.gates.offline import OfflineGates
    from qwick.lora.request import LoRARequest

# (model, adapters, **LLM options) -> the gates over that model, loaded: the command line above gates/ loads it
OpenGates = Callable[..., "OfflineGates"]
LEDGER_ENV = "QWICK_LEDGER"


def register_ledger_commands(subparsers: Any, open_gates: OpenGates) -> None:
    """`open_gates(args, model, adapters: list[LoRARequest])` loads the model `ledger replay` re-runs on, as the
    parsed flags describe it."""
    ledger = subparsers.add_parser("ledger", help="read the gate decision ledger, replay a decision",
                                   description="Read the SQLite decision ledger written by `qwick serve --ledger`.")
    sub = ledger.add_subparsers(dest="ledger_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ledger", default=os.environ.get(LEDGER_ENV), metavar="PATH",
                            help=f"the ledger file (default: ${LEDGER_ENV})")

    tail = sub.add_parser("tail", help="the last N decisions, oldest first (JSON lines)")
    common(tail)
    tail.add_argument("-n", type=int, default=20, help="how many (default 20)")
    tail.set_defaults(handler=_tail)

    q = sub.add_parser("query", help="decisions matching filters, newest first (JSON lines)")
    common(q)
    q.add_argument("--gate")
    q.add_argument("--kind", help="moderate, classify, rewrite, score, extract, completion, embedding, retrieve "
                                  "or answer")
    q.add_argument("--decision", help="e.g. allow, deny, a label, timeout:escalate")
    q.add_argument("--request-id")
    q.add_argument("--trace-id", help="a pipeline run: all its steps, in run order")
    q.add_argument("--since", help="unix time, ISO date/time, or an age like 15m / 2h / 1d")
    q.add_argument("--escalated", action="store_true")
    q.add_argument("--timed-out", action="store_true")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(handler=_query)

    st = sub.add_parser("stats", help="counts, decisions, escalations, timeouts and latency per gate (JSON)")
    common(st)
    st.set_defaults(handler=_stats)

    rp = sub.add_parser("replay", help="re-run a recorded decision or pipeline run; exit 0 if it still matches, 1 if not",
                        description="Re-run the recorded request REQUEST_ID, or every step of the pipeline run "
                                    "--trace-id T (needs --ledger-raw-text at record time), with the recorded gate "
                                    "definitions (or --gates FILE's), no deadline, and report whether the decisions "
                                    "still match (e.g. after a model, adapter or threshold change).")
    common(rp)
    rp.add_argument("request_id", nargs="?", default=None)
    rp.add_argument("--trace-id", default=None, help="replay every step of this pipeline run; report which changed")
    rp.add_argument("--gates", default=None, metavar="YAML",
                    help="with --trace-id: run gate steps with this gates file's definition of their gate")
    rp.add_argument("--model", default=None, help="model folder or hub id (default: the recorded model)")
    rp.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    rp.add_argument("--device", default="auto")
    rp.add_argument("--load-format", default="auto", choices=["auto", "dummy"])
    rp.add_argument("--max-model-len", type=int, default=None)
    rp.add_argument("--tolerance", type=float, default=1e-3, help="largest score difference that still matches")
    rp.add_argument("--lora-modules", nargs="+", default=[], metavar="NAME=PATH",
                    help="LoRA adapters, as `qwick serve` takes them: needed when the recorded gate names one")
    rp.set_defaults(handler=partial(_replay, open_gates=open_gates))


def _conn(args: argparse.Namespace) -> Any:
    from qwick.gates.ledger_query import connect

    if not args.ledger:
        raise ValueError(f"give the ledger file with --ledger PATH (or set ${LEDGER_ENV})")
    return connect(args.ledger)


def _print(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


def _tail(args: argparse.Namespace) -> int:
    from qwick.gates.ledger_query import tail

    _print(tail(_conn(args), args.n))
    return 0


def _query(args: argparse.Namespace) -> int:
    from qwick.gates.ledger_query import Filters, query

    filters = Filters(args.gate, args.kind, args.decision, args.request_id, _since(args.since), args.escalated,
                      args.timed_out, args.limit, args.trace_id)
    _print(query(_conn(args), filters))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from qwick.gates.ledger_query import stats

    sys.stdout.write(json.dumps(stats(_conn(args)), indent=2) + "\n")
    return 0


def _replay(args: argparse.Namespace, open_gates: OpenGates) -> int:
    from qwick.gates.ledger_query import find
    from qwick.gates.replay import replay
    from qwick.lora.modules import parse_lora_modules

    if (args.request_id is None) == (args.trace_id is None):
        raise ValueError("give either a REQUEST_ID or --trace-id T (a pipeline run)")
    if args.trace_id is not None:
        return _replay_trace(args, open_gates)
    if args.gates is not None:
        raise ValueError("--gates applies to --trace-id replays")
    row = find(_conn(args), args.request_id)
    if row is None:
        raise ValueError(f"no ledger row with request id {args.request_id!r}")
    if row["input"] is None:
        raise ValueError(f"request {args.request_id!r} was recorded without its text (raw text storage is off by "
                         "default); replay needs records written with `qwick serve --ledger-raw-text`")
    modules: list[LoRARequest] = parse_lora_modules(args.lora_modules)
    gates = open_gates(args, args.model or row["model"], modules)
    report = replay(gates, row, args.tolerance)
    report["same_weights"] = gates.service.identity.weights_sha256 == row["weights_sha256"]
    sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0 if report["match"] else 1


def _replay_trace(args: argparse.Namespace, open_gates: OpenGates) -> int:
    from qwick.gates.ledger_query import trace
    from qwick.gates.loader import load_gates
    from qwick.gates.replay import replay_trace
    from qwick.lora.modules import parse_lora_modules

    rows = trace(_conn(args), args.trace_id)
    if not rows:
        raise ValueError(f"no ledger rows with trace id {args.trace_id!r}")
    if any(r["input"] is None for r in rows):
        raise ValueError(f"trace {args.trace_id!r} was recorded without its texts (raw text storage is off by "
                         "default); replay needs records written with `qwick serve --ledger-raw-text`")
    definitions = load_gates(args.gates) if args.gates is not None else None  # a bad file fails before the load
    modules: list[LoRARequest] = parse_lora_modules(args.lora_modules)
    gates = open_gates(args, args.model or rows[0]["model"], modules)
    report = replay_trace(gates, rows, args.tolerance, definitions)
    sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0 if report["match"] else 1


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ValueError(f"--since must be unix time, an ISO date/time or an age like 15m, got {value!r}") from None

