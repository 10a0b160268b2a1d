"""Helpers for the agent tests: configs for the calendar MCP server (calendar_server.py), its call log, and a
backend that replays scripted model turns (to drive the loop into the cases a random model will not reach on
its own: unknown tools, bad arguments)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

from qwick.agent.backends import ModelTurn
from qwick.agent.parsing import parse_calls

SERVER = Path(__file__).parent / "calendar_server.py"


def stdio_config(log: Path, name: str = "cal", **extra: Any) -> dict[str, Any]:
    return {"mcpServers": {name: {"command": sys.executable, "args": [str(SERVER)],
                                  "env": {"CALENDAR_LOG": str(log)}, **extra}}}


def logged(log: Path) -> list[dict[str, Any]]:
    """The calls the server received."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScriptedBackend:
    """Replays model answers (hermes text) one per step, recording the messages it was given."""

    name = "scripted"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.seen: list[list[dict[str, Any]]] = []

    def step(self, messages: list[dict[str, Any]], tools: list[Any], forced: bool) -> ModelTurn:
        self.seen.append([dict(m) for m in messages])
        content, calls = parse_calls(self.answers.pop(0), {t.name for t in tools})
        return ModelTurn(content, None, calls, "stop")


def call(name: str, **arguments: Any) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'
