"""The loop against a real MCP server over stdio, with scripted model answers: what reaches the server, what
the model is told back (tool messages), and how failing, hung and crashed servers are handled."""

from __future__ import annotations

import time

import pytest
from agentkit import ScriptedBackend, call, logged, stdio_config

from qwick.agent import Agent


def agent_for(tmp_path, *answers: str, **options) -> tuple[Agent, ScriptedBackend]:
    agent, backend = Agent(_NoLLM(), stdio_config(tmp_path / "calls.jsonl"), **options), ScriptedBackend(*answers)
    agent.backend = backend
    return agent, backend


class _NoLLM:
    """Stands in for an LLM: the scripted backend replaces the model."""


def tool_messages(transcript) -> list[str]:
    return [m["content"] for m in transcript.messages if m["role"] == "tool"]


def test_a_call_runs_on_the_server_and_its_result_goes_back_to_the_model(tmp_path):
    agent, backend = agent_for(tmp_path, call("set_alarm", day="tue", hour=7), "Done: ALARM-07-TUE.")
    with agent:
        assert {"set_alarm", "add_event", "always_fails", "slow", "crash", "huge"} <= {t.name for t in agent.tools}
        transcript = agent.run("wake me tuesday at 7")
    assert logged(tmp_path / "calls.jsonl") == [{"tool": "set_alarm", "arguments": {"day": "tue", "hour": 7}}]
    result = "alarm set for tue 7:00, confirmation code ALARM-07-TUE"
    assert backend.seen[1][-1] == {"role": "tool", "tool_call_id": transcript.tool_calls[0]["id"],
                                   "name": "set_alarm", "content": result}
    assert transcript.answer == "Done: ALARM-07-TUE." and transcript.stop_reason == "answer"
    assert transcript.tool_calls[0]["status"] == "ok" and transcript.tool_calls[0]["server"] == "cal"
    assert [e.type for e in transcript.events] == ["model", "tool_call", "tool_result", "model", "answer"]


def test_is_error_results_unknown_tools_and_invalid_arguments_are_fed_back(tmp_path):
    agent, backend = agent_for(tmp_path, call("always_fails", reason="test") + call("delete_all")
                               + call("set_alarm", day="sun", hour=99), "ok")
    with agent:
        transcript = agent.run("go")
    assert [c["status"] for c in transcript.tool_calls] == ["error", "unknown_tool", "invalid_arguments"]
    failed, unknown, invalid = tool_messages(transcript)
    assert failed.startswith("Error executing tool always_fails: the calendar is locked: test")
    assert unknown.startswith("Error: there is no tool named 'delete_all'; the tools are: add_event, set_alarm")
    assert "day: 'sun' is not one of ['mon', 'tue', 'wed']" in invalid and "hour: 99 is greater than" in invalid
    # the server saw only the call that fit its schema
    assert [c["tool"] for c in logged(tmp_path / "calls.jsonl")] == ["always_fails"]
    assert backend.seen[1][-3:] == transcript.messages[-4:-1]


def test_a_huge_result_is_cut_with_a_note_to_the_model(tmp_path):
    agent, _ = agent_for(tmp_path, call("huge"), "ok", max_result_chars=1000)
    with agent:
        transcript = agent.run("go")
    (message,) = tool_messages(transcript)
    assert message.endswith("[result truncated: showing the first 1000 of 50000 characters]")
    assert len(message) < 1100 and transcript.tool_calls[0]["truncated"]


def test_a_hung_server_times_out_and_the_loop_goes_on_without_it(tmp_path):
    agent, _ = agent_for(tmp_path, call("slow", seconds=30), call("list_events", day="mon"), "done",
                               tool_timeout=1.0)
    with agent:
        start = time.monotonic()
        transcript = agent.run("go")
        assert time.monotonic() - start < 15
        assert agent.tools == []
    timed_out, gone = transcript.tool_calls
    assert timed_out["status"] == "timeout"
    assert timed_out["result"] == ("Error: the tool 'slow' of MCP server 'cal' did not answer within 1 s; the "
                                   "server was stopped and its tools are no longer available")
    assert gone["status"] == "unknown_tool" and transcript.answer == "done"


def test_a_crashed_server_is_reported(tmp_path):
    agent, _ = agent_for(tmp_path, call("crash"), "sorry")
    with agent:
        transcript = agent.run("go")
    (crashed,) = transcript.tool_calls
    assert crashed["status"] == "server_failed"
    assert crashed["result"].startswith("Error: MCP server 'cal' failed during 'crash' (")
    assert transcript.answer == "sorry"


def test_a_server_that_cannot_start_is_a_notice(tmp_path):
    config = {"mcpServers": {"dead": {"url": "http://127.0.0.1:9/mcp"}, **stdio_config(tmp_path / "c")["mcpServers"]}}
    agent = Agent(_NoLLM(), config)
    agent.backend = ScriptedBackend("hello")
    with agent:
        transcript = agent.run("hi")
    assert transcript.notices[0].startswith("MCP server 'dead' (http://127.0.0.1:9/mcp) could not start: ")
    assert "set_alarm" in transcript.tools and transcript.answer == "hello"


def test_declined_calls_are_not_run_and_auto_approved_ones_are(tmp_path):
    asked = []

    def confirm(tool, arguments):
        asked.append(tool.name)
        return False

    agent, _ = agent_for(tmp_path, call("add_event", title="a", day="mon", hour=1) + call("list_events", day="mon"),
                         "ok", confirm=confirm, approve=["list_events"])
    with agent:
        transcript = agent.run("go")
    assert asked == ["add_event"]
    assert [c["status"] for c in transcript.tool_calls] == ["declined", "ok"]
    assert [c["tool"] for c in logged(tmp_path / "calls.jsonl")] == ["list_events"]


def test_max_steps_stops_a_model_that_keeps_calling(tmp_path):
    agent, _ = agent_for(tmp_path, *[call("list_events", day="mon")] * 3, max_steps=2)
    with agent:
        transcript = agent.run("go")
    assert (transcript.answer, transcript.stop_reason, transcript.steps) == (None, "max_steps", 2)


def test_bad_agent_options_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="tool_choice must be one of auto, required"):
        Agent(_NoLLM(), stdio_config(tmp_path / "c"), tool_choice="any")
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        Agent(_NoLLM(), stdio_config(tmp_path / "c"), max_steps=0)
