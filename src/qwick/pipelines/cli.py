"""`qwick pipeline run FILE NAME --text ...`: one pipeline of a gates file on one text, offline."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"


def register_pipeline_commands(sub: Any) -> None:
    pipeline = sub.add_parser("pipeline", help="run a pipeline of a gates file",
                              description="Pipelines declared under 'pipelines:' in a gates file (README \"Pipelines\").")
    commands = pipeline.add_subparsers(dest="pipeline_command", required=True)
    run = commands.add_parser("run", help="run pipeline NAME of FILE on --text; print the result",
                              description="Run pipeline NAME of the gates file FILE on --text with MODEL, offline. "
                                          "Exit 0 when it ran (blocked or not), 1 when a step failed.")
    run.add_argument("file", help="the gates file (YAML) declaring the pipeline")
    run.add_argument("name", help="the pipeline's name")
    run.add_argument("--text", required=True, help="the input text")
    run.add_argument("--vars", default=None, metavar="JSON", help="a JSON object the format steps see")
    run.add_argument("--user-id", default=None, help="recorded (hashed) in the ledger")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument("--model", default=DEFAULT_MODEL, help=f"model folder or hub id (default {DEFAULT_MODEL})")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    run.add_argument("--device", default="auto")
    run.add_argument("--max-model-len", type=int, default=None)
    run.add_argument("--load-format", default="auto", choices=["auto", "dummy"])
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--ledger", default=None, metavar="PATH", help="record every step in this ledger file")
    run.add_argument("--ledger-raw-text", action="store_true", help="with --ledger: store texts (replay needs them)")
    run.set_defaults(handler=run_pipeline)


def run_pipeline(args: argparse.Namespace) -> int:
    from qwick.engine.args import EngineArgs
    from qwick.engine.builder import build_engine
    from qwick.engine.sync_engine import InlineEngineClient
    from qwick.gates.identity import ModelIdentity
    from qwick.gates.ledger import Ledger
    from qwick.gates.loader import load_gates
    from qwick.gates.offline import OfflineGates
    from qwick.pipelines.loader import parse_pipelines
    from qwick.pipelines.offline import run_offline

    variables = _vars(args.vars)
    gates = load_gates(args.file)  # the file and the pipeline name are checked before the model loads
    pipelines = parse_pipelines(gates)
    if args.name not in pipelines:
        raise ValueError(f"{args.file}: no pipeline named {args.name!r}; defined: "
                         f"{', '.join(sorted(pipelines)) or 'none'}")
    if args.ledger_raw_text and not args.ledger:
        raise ValueError("--ledger-raw-text needs --ledger PATH")
    ledger = Ledger(args.ledger, raw_text=args.ledger_raw_text) if args.ledger else None
    try:
        built = build_engine(EngineArgs.from_cli_args(args))
        assert built.tokenizer is not None
        identity = ModelIdentity.of_checkpoint(str(args.model), built.model_path, None, args.load_format, args.seed)
        offline = OfflineGates(InlineEngineClient(built.engine), built.tokenizer, identity, gates, ledger)
        result = run_offline(offline, args.name, args.text, user_id=args.user_id, vars=variables)
    finally:
        if ledger is not None:
            ledger.close()
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")
    elif result.error is None:
        for step in result.steps:
            sys.stdout.write(f"{step.name} ({step.kind}): {step.label}{' [timed out]' if step.timed_out else ''} "
                             f"{step.latency_ms:.0f} ms\n")
        shown = result.output if isinstance(result.output, str) else json.dumps(result.output, ensure_ascii=False)
        sys.stdout.write(f"blocked by step {result.blocked_by!r}\n" if result.blocked else f"{shown}\n")
        sys.stdout.write(f"trace {result.trace_id}\n")
    if result.error is not None:
        sys.stderr.write(f"qwick: error: pipeline {args.name!r}: {result.error.message} (trace {result.trace_id})\n")
        return 1
    return 0


def _vars(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--vars must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--vars must be a JSON object, got {type(value).__name__}")
    return value
