"""`qwick mcp MODEL [--gates FILE] [--transport stdio|http --port P]`: the gates as MCP tools."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

# the main CLI's helpers (it sits above this package): add MODEL/--dtype/... to a parser; load the LLM they name
AddModelArgs = Callable[[argparse.ArgumentParser], None]
LoadLLM = Callable[..., Any]


def register_mcp_commands(sub: Any, add_model_args: AddModelArgs, load_llm: LoadLLM) -> None:
    """Add `mcp` to the main `qwick` parser's subparsers."""
    parser = sub.add_parser(
        "mcp", help="serve the gates as MCP tools (for Claude Code, Cursor, any MCP client)",
        description="Serve MODEL's gates as MCP tools: moderate, classify, rewrite, extract (JSON against a schema "
                    "given in the call), score (query x items) and embed, with input and output schemas. Over "
                    "stdio (an MCP client starts `qwick mcp MODEL` itself) or streamable HTTP.")
    add_model_args(parser)
    parser.add_argument("--transport", default="stdio", choices=["stdio", "http"],
                        help="stdio (default) or http (streamable HTTP at --host:--port --path)")
    parser.add_argument("--host", default="127.0.0.1", help="with http: address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="with http: port (default 8001)")
    parser.add_argument("--path", default="/mcp", help="with http: the endpoint path (default /mcp)")
    parser.add_argument("--gates", default=None, metavar="YAML", help="gates file: adds or redefines gates")
    parser.add_argument("--ledger", default=None, metavar="PATH", help="record every decision in this SQLite file")
    parser.add_argument("--ledger-raw-text", action="store_true", help="with --ledger: also store raw texts")
    parser.set_defaults(handler=lambda args: run_mcp(args, load_llm))


def run_mcp(args: argparse.Namespace, load_llm: LoadLLM) -> int:
    from qwick.engine.args import DEFAULT_MODEL
    from qwick.gates.identity import ModelIdentity
    from qwick.gates.ledger import Ledger
    from qwick.gates.loader import load_gates
    from qwick.gates.service import GateService
    from qwick.llm import start_async_engine

    try:
        from qwick.mcp_server.tools import gate_mcp_server
    except ImportError as exc:
        raise ValueError(f"qwick mcp needs the agents extra: pip install 'qwick[agents]' ({exc})") from None

    if not args.path.startswith("/"):
        raise ValueError(f"--path must start with '/', got {args.path!r}")
    if args.ledger_raw_text and not args.ledger:
        raise ValueError("--ledger-raw-text needs --ledger PATH")
    args.model = args.model or DEFAULT_MODEL
    gates = load_gates(args.gates)  # a bad gates file fails before the model loads
    with _stdout_to_stderr(args.transport == "stdio"):  # over stdio, stdout is the protocol's alone
        llm, client = start_async_engine(lambda: load_llm(args))
    ledger = Ledger(args.ledger, raw_text=args.ledger_raw_text) if args.ledger else None
    try:
        tokenizer = llm.get_tokenizer()
        gates.check_tokens(tokenizer)
        identity = llm.model_identity() if ledger is not None else ModelIdentity(args.model, None, "")
        server = gate_mcp_server(GateService(client, tokenizer, gates, identity, ledger))
        if args.transport == "stdio":
            server.run()
        else:
            print(f"qwick mcp: {args.model} at http://{args.host}:{args.port}{args.path}", file=sys.stderr)
            server.run(transport="streamable-http", host=args.host, port=args.port, streamable_http_path=args.path)
    finally:
        client.stop()
        if ledger is not None:
            ledger.close()
    return 0


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """Send whatever writes to stdout (file descriptor 1: native code too) to stderr meanwhile."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
