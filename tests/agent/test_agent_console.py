"""What a person sees: the `qwick chat --mcp` REPL (scripted model, real stdio server) and the event lines."""

from __future__ import annotations

import io

from agentkit import ScriptedBackend, call, logged, stdio_config

from qwick.agent import Agent
from qwick.agent.console import run_agent_repl


class _NoLLM:
    """Stands in for an LLM: the scripted backend replaces the model."""


def test_chat_turns_run_through_the_agent_and_show_calls_and_results(tmp_path):
    agent = Agent(_NoLLM(), stdio_config(tmp_path / "calls.jsonl"), confirm=lambda tool, arguments: False)
    backend = ScriptedBackend(call("set_alarm", day="mon", hour=6), "Alarm set.", "You asked for 6.")
    agent.backend = backend
    out = io.StringIO()
    inp = io.StringIO("/tools\nwake me monday at 6\ny\nwhat time?\n/exit\n")
    with agent:
        assert run_agent_repl(agent, out, inp, model="tiny") == 0
    text = out.getvalue()
    assert "with MCP tools: add_event, set_alarm" in text and "set_alarm (cal): Set an alarm." in text
    assert '-> cal: set_alarm {"day": "mon", "hour": 6}' in text
    assert "run set_alarm? [y]es / [a]lways / [N]o: " in text  # asked, on the chat's own input
    assert "<- set_alarm [ok] alarm set for mon 6:00, confirmation code ALARM-06-MON" in text
    assert "Alarm set." in text and "You asked for 6." in text
    assert logged(tmp_path / "calls.jsonl") == [{"tool": "set_alarm", "arguments": {"day": "mon", "hour": 6}}]
    # the second turn saw the first one's call and result
    assert [m["role"] for m in backend.seen[2]] == ["user", "assistant", "tool", "assistant", "user"]


def test_declining_at_the_prompt_tells_the_model(tmp_path):
    agent = Agent(_NoLLM(), stdio_config(tmp_path / "calls.jsonl"), confirm=lambda tool, arguments: False)
    agent.backend = ScriptedBackend(call("set_alarm", day="mon", hour=6), "OK, not set.")
    out = io.StringIO()
    with agent:
        run_agent_repl(agent, out, io.StringIO("wake me\nn\n"), model="tiny")
    assert "<- set_alarm [declined] Error: the user declined this tool call" in out.getvalue()
    assert logged(tmp_path / "calls.jsonl") == []
