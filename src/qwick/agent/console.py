"""What a person sees of an agent run in a terminal: each tool call (name, arguments) and its result as it
happens, the confirmation prompt before a call, and the `qwick chat --mcp` / `qwick agent` REPL."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TextIO

from qwick.agent.events import (
    AgentEvent,
    AnswerEvent,
    ModelStep,
    Notice,
    ToolCallEvent,
    ToolResultEvent,
    Transcript,
)
from qwick.agent.loop import Agent
from qwick.agent.tools import AgentTool
from qwick.chat_repl import _line_reader

SHOWN_RESULT_CHARS = 400  # of a result, on screen (the model gets it all, up to max_result_chars)
AGENT_HELP = "commands: /tools  /think  /no_think  /reset  /exit   (Ctrl-D also exits)"


def show_event(event: AgentEvent, out: TextIO, answer: bool = True) -> None:
    """One event for a person; `answer`: also write the final answer (off when stdout gets it instead)."""
    if isinstance(event, Notice):
        out.write(f"[notice] {event.text}\n")
    elif isinstance(event, ModelStep) and event.reasoning:
        out.write(f"[think] {event.reasoning.strip()} [/think]\n")
    elif isinstance(event, ToolCallEvent):
        where = f"{event.server}: " if event.server else ""
        fixed = f"  (repaired: {event.repaired})" if event.repaired else ""
        out.write(f"-> {where}{event.name} {json.dumps(event.arguments, ensure_ascii=False)}{fixed}\n")
    elif isinstance(event, ToolResultEvent):
        text = event.content if len(event.content) <= SHOWN_RESULT_CHARS else (
            event.content[:SHOWN_RESULT_CHARS] + f"... ({len(event.content)} characters)")
        out.write(f"<- {event.name} [{event.status}] {text}\n")
    elif isinstance(event, AnswerEvent):
        if event.text is None:
            out.write(f"[stopped: {event.stop_reason} after {event.steps} step(s)]\n")
        elif answer:
            out.write(event.text + "\n")
    out.flush()


def terminal_confirm(out: TextIO, read: Callable[[], str | None]) -> Callable[[AgentTool, Any], bool]:
    """Ask before each call: y runs it, a runs it and every later call of that tool, anything else declines."""
    always: set[str] = set()

    def confirm(tool: AgentTool, arguments: Any) -> bool:
        if tool.name in always:
            return True
        out.write(f"run {tool.name}? [y]es / [a]lways / [N]o: ")
        out.flush()
        answer = (read() or "").strip().lower()
        if answer in ("a", "always"):
            always.add(tool.name)
        return answer in ("y", "yes", "a", "always")

    return confirm


def run_agent_repl(agent: Agent, out: TextIO, inp: TextIO, *, model: str, system: str | None = None) -> int:
    """Chat turns that run through the agent; 0 on /exit or end of input, 130 on Ctrl-C at the prompt."""
    read = _line_reader(out, inp)
    if agent.confirm is not None:  # confirmations read from the same input as the chat
        agent.confirm = terminal_confirm(out, lambda: inp.readline() or None)
    for text in agent.take_notices():
        out.write(f"[notice] {text}\n")
    head = [{"role": "system", "content": system}] if system else []
    history: list[dict[str, Any]] = []
    names = ", ".join(t.name for t in agent.tools) or "none"
    out.write(f"qwick chat: {model} with MCP tools: {names}. {AGENT_HELP}\n")
    while True:
        try:
            line = read()
        except KeyboardInterrupt:
            out.write("\n")
            return 130
        if line is None:
            out.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            return 0
        if text in ("/think", "/no_think", "/reset", "/tools"):
            history = _command(agent, text, history, out)
            continue
        transcript = Transcript([])
        try:
            for event in agent.events(head + history + [{"role": "user", "content": text}], transcript):
                show_event(event, out)
        except KeyboardInterrupt:
            out.write(" [interrupted]\n")
            continue
        history = transcript.messages[len(head):]


def _command(agent: Agent, text: str, history: list[dict[str, Any]], out: TextIO) -> list[dict[str, Any]]:
    if text == "/reset":
        out.write("[history cleared]\n")
        return []
    if text == "/tools":
        for tool in agent.tools:
            out.write(f"{tool.name} ({tool.server}): {tool.description.strip().splitlines()[0] if tool.description else ''}\n")
        return history
    backend: Any = agent.backend
    backend.generation = replace(backend.generation, thinking=text == "/think")
    out.write(f"[thinking {'on' if text == '/think' else 'off'}]\n")
    return history

