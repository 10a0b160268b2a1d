"""A tiny random Qwen3 as the agent's model, over MCP servers on stdio and streamable HTTP, offline and behind a
running server: the grammar forces a call whose name is a tool and whose arguments fit its schema, the
server gets it, and its result is in the next prompt."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
from agentkit import logged, stdio_config

from qwick.agent import Agent, ModelStep

FORCED = {"tool_choice": "required", "thinking": False, "temperature": 0.0, "max_tokens": 40, "max_steps": 2}


def check_forced_run(transcript, log) -> None:
    """Step 1 was forced and its call reached the server with arguments that fit the schema; step 2's prompt
    holds the result."""
    steps = [e for e in transcript.events if isinstance(e, ModelStep)]
    assert steps[0].forced and not steps[1].forced
    (record,) = transcript.tool_calls[:1]
    assert record["name"] == "set_alarm" and record["status"] == "ok", record
    schema = {"type": "object", "properties": {"day": {"enum": ["mon", "tue", "wed"]},
                                               "hour": {"type": "integer", "minimum": 0, "maximum": 23}},
              "required": ["day", "hour"]}
    jsonschema.validate(record["arguments"], schema)
    assert logged(log)[0] == {"tool": "set_alarm", "arguments": record["arguments"]}
    assert record["result"].startswith("alarm set for ") and record["result"] in steps[1].prompt
    assert "<tool_response>\n" + record["result"] in steps[1].prompt  # rendered by the model's own template


def test_forced_call_over_stdio(llm, tmp_path):
    log = tmp_path / "calls.jsonl"
    with Agent(llm, stdio_config(log), allowed_tools=["set_alarm"], **FORCED) as agent:
        transcript = agent.run("Set an alarm for tuesday at 7.")
    check_forced_run(transcript, log)
    assert transcript.tools == ["set_alarm"]


def test_forced_call_over_streamable_http(llm, http_server, tmp_path):
    url, log = http_server
    before = len(logged(log))
    with Agent(llm, {"mcpServers": {"cal": {"url": url}}}, allowed_tools=["set_alarm"], **FORCED) as agent:
        transcript = agent.run("Set an alarm for tuesday at 7.")
    assert len(logged(log)) > before
    log_after = logged(log)[before:]
    steps = [e for e in transcript.events if isinstance(e, ModelStep)]
    record = transcript.tool_calls[0]
    assert steps[0].forced and record["status"] == "ok" and log_after[0]["arguments"] == record["arguments"]
    assert record["result"] in steps[1].prompt


def test_forced_calls_between_several_tools_name_a_tool_and_fit_its_schema(llm, http_server):
    url, _ = http_server
    tools = ["set_alarm", "add_event", "list_events"]
    with Agent(llm, {"mcpServers": {"cal": {"url": url}}}, allowed_tools=tools,
               **{**FORCED, "max_steps": 1, "max_tokens": 80}) as agent:
        schemas = {t.name: t.input_schema for t in agent.tools}
        transcript = agent.run("Plan my week.")
    calls = transcript.tool_calls
    if transcript.stop_reason == "length":  # a long random string argument ran past max_tokens: said so
        assert "did not finish within max_tokens" in transcript.notices[-1]
        return
    assert calls and all(c["name"] in tools for c in calls)
    for c in calls:
        jsonschema.validate(c["arguments"], schemas[c["name"]])
        assert c["status"] == "ok"


def test_agent_against_a_running_server(tiny_model_dir, tmp_path):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "server"))
    from serverkit import serving, tiny_llm

    from qwick.server import build_app
    from qwick.server.app import start_llm

    log = tmp_path / "calls.jsonl"
    llm, engine = start_llm(lambda: tiny_llm(tiny_model_dir, max_model_len=2048))
    with serving(build_app(llm, "tiny", client=engine)) as server, \
            Agent(f"{server.url}/v1", stdio_config(log), allowed_tools=["set_alarm"], **FORCED) as agent:
        assert agent.backend.model == "tiny"
        transcript = agent.run("Set an alarm for tuesday at 7.")
        record = transcript.tool_calls[0]
        assert record["status"] == "ok" and logged(log)[0]["arguments"] == record["arguments"]
        # the result went back to the server as a tool message
        assert transcript.messages[2] == {"role": "tool", "tool_call_id": record["id"], "name": "set_alarm",
                                          "content": record["result"]}
        assert transcript.steps == 2


@pytest.mark.parametrize("transport", ["stdio"])
def test_cli_runs_one_task_and_prints_the_transcript_as_json(tiny_model_dir, tmp_path, transport):
    log = tmp_path / "calls.jsonl"
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps(stdio_config(log)))
    result = subprocess.run(
        [sys.executable, "-m", "qwick.cli", "agent", str(tiny_model_dir), "--mcp", str(config), "-p",
         "Set an alarm for tuesday at 7.", "--json", "--yes", "--tool-choice", "required", "--no-think",
         "--allowed-tools", "set_alarm", "--max-steps", "2", "--max-tokens", "40", "--temperature", "0",
         "--dtype", "float32", "--max-model-len", "2048"], capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 1), result.stderr
    transcript = json.loads(result.stdout)
    record = transcript["tool_calls"][0]
    assert record["name"] == "set_alarm" and record["status"] == "ok"
    assert logged(log)[0]["arguments"] == record["arguments"]
    assert transcript["messages"][0] == {"role": "user", "content": "Set an alarm for tuesday at 7."}
    assert f"-> cal: set_alarm {json.dumps(record['arguments'])}" in result.stderr  # the person saw the call
    assert "<- set_alarm [ok] alarm set for" in result.stderr
    assert transcript["stop_reason"] in ("answer", "max_steps") and transcript["steps"] == 2
