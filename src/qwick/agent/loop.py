"""`Agent`: the MCP tool loop. List tools -> render them with the model's chat template -> generate -> parse
hermes calls -> check and call them through MCP -> feed results back as `tool` messages -> repeat until an
answer or `max_steps`.

A call is due on the first step with `tool_choice="required"`; then the grammar forces it (backends.py). A
call whose name is unknown or whose arguments do not fit the tool's input schema is not run: the model is told
why, in the tool message, and may try again. Each call is shown (events) and confirmed (`confirm`) unless
auto-approved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from qwick.agent.backends import Backend, Generation, LocalBackend, OpenAIBackend
from qwick.agent.config import DEFAULT_MAX_RESULT_CHARS, DEFAULT_TOOL_TIMEOUT, McpConfig, as_mcp_config
from qwick.agent.events import (
    AgentEvent,
    AnswerEvent,
    ModelStep,
    Notice,
    ToolCallEvent,
    ToolResultEvent,
    Transcript,
)
from qwick.agent.parsing import ParsedCall
from qwick.agent.servers import ServerPool
from qwick.agent.tools import (
    AgentTool,
    argument_errors,
    build_toolset,
    truncate_result,
)

# (tool, arguments) -> run it? Asked before each call that is not auto-approved.
Confirm = Callable[[AgentTool, Any], bool]
TOOL_CHOICES = ("auto", "required")


class Agent:
    """An agent over `llm_or_base_url` (a `qwick.LLM`, or the base URL of an OpenAI-compatible server such as
    `http://127.0.0.1:8000/v1`) with the tools of the MCP servers in `mcp` (a config file path, its parsed
    dict, or a McpConfig). Use as a context manager (servers start on entry, stop on exit), or call `close()`.

    `confirm`: asked before each call (None: every call runs); `approve`: tool names that never ask (besides
    each server's `autoApprove`)."""

    def __init__(self, llm_or_base_url: Any, mcp: McpConfig | dict[str, Any] | str | Path, *,
                 model: str | None = None, api_key: str | None = None, tool_choice: str = "auto",
                 max_steps: int = 8, thinking: bool = True, max_tokens: int = 2048,
                 max_thinking_tokens: int | None = None, temperature: float | None = None, seed: int | None = None,
                 allowed_tools: Sequence[str] | None = None, max_tools: int | None = None,
                 tool_timeout: float = DEFAULT_TOOL_TIMEOUT, max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
                 confirm: Confirm | None = None, approve: Sequence[str] = (), errlog: Any = None) -> None:
        if tool_choice not in TOOL_CHOICES:
            raise ValueError(f"tool_choice must be one of {', '.join(TOOL_CHOICES)}, got {tool_choice!r}")
        for name, value in (("max_steps", max_steps), ("max_result_chars", max_result_chars)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_tools is not None and (isinstance(max_tools, bool) or not isinstance(max_tools, int) or max_tools < 1):
            raise ValueError(f"max_tools must be a positive integer, got {max_tools!r}")
        if not tool_timeout > 0:
            raise ValueError(f"tool_timeout must be a positive number of seconds, got {tool_timeout!r}")
        self.config = as_mcp_config(mcp)
        generation = Generation(max_tokens, temperature, seed, thinking, max_thinking_tokens)
        self.backend: Backend = (OpenAIBackend(llm_or_base_url, generation, model, api_key)
                                 if isinstance(llm_or_base_url, str) else LocalBackend(llm_or_base_url, generation))
        self.tool_choice, self.max_steps, self.max_result_chars = tool_choice, max_steps, max_result_chars
        self.allowed_tools = list(allowed_tools) if allowed_tools is not None else None
        self.max_tools, self.confirm = max_tools, confirm
        self.approve = set(approve) | {f"{s.name}__{t}" for s in self.config.servers for t in s.auto_approve}
        self.pool = ServerPool(self.config, tool_timeout, errlog=errlog)
        self._started = False
        self._pending_notices: list[str] = []  # start-up notices not yet reported by events()

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> list[str]:
        """Start the MCP servers and list their tools; returns notices (servers that failed, tools left out).
        A bad --allowed-tools raises ValueError."""
        if not self._started:
            self._started = True
            self._pending_notices = self.pool.start()
            try:
                self._pending_notices += self._toolset()[1]
            except BaseException:
                self.close()
                raise
        return list(self._pending_notices)

    def take_notices(self) -> list[str]:
        """The start-up notices not reported yet (each is reported once, by the first run or by this)."""
        self.start()
        notices, self._pending_notices = self._pending_notices, []
        return notices

    def close(self) -> None:
        self.pool.close()

    @property
    def tools(self) -> list[AgentTool]:
        """The tools the model is offered now (a server that failed has taken its tools with it)."""
        self.start()
        return self._toolset()[0]

    def _toolset(self) -> tuple[list[AgentTool], list[str]]:
        return build_toolset(self.pool.tools, self.allowed_tools, self.max_tools)

    def run(self, messages: str | list[dict[str, Any]]) -> Transcript:
        """Run to an answer (or max_steps); the whole transcript."""
        transcript = Transcript([])
        for _ in self.events(messages, transcript):
            pass
        return transcript

    def events(self, messages: str | list[dict[str, Any]], transcript: Transcript | None = None) -> Iterator[AgentEvent]:
        """Run, yielding each event as it happens; `transcript` (if given) is filled as it goes."""
        transcript = transcript if transcript is not None else Transcript([])
        transcript.messages = ([{"role": "user", "content": messages}] if isinstance(messages, str)
                               else [dict(m) for m in messages])

        def emit(event: AgentEvent) -> AgentEvent:
            transcript.events.append(event)
            return event

        for text in self.take_notices():
            yield emit(Notice(text))
        transcript.tools = [t.name for t in self.tools]
        for step in range(1, self.max_steps + 1):
            tools = self.tools
            forced = self.tool_choice == "required" and step == 1 and bool(tools)
            turn = self.backend.step(transcript.messages, tools, forced)
            transcript.steps = step
            yield emit(ModelStep(step, forced, turn.content, turn.reasoning, turn.finish_reason, turn.prompt_tokens,
                                 turn.completion_tokens, turn.prompt))
            assistant: dict[str, Any] = {"role": "assistant", "content": turn.content or ""}
            if turn.reasoning:
                assistant["reasoning_content"] = turn.reasoning
            if forced and not turn.calls:  # only max_tokens stops a forced step before its first call ends
                transcript.stop_reason = "length"
                yield emit(Notice(f"the forced tool call did not finish within max_tokens ({turn.completion_tokens} "
                                  "tokens); raise --max-tokens"))
                yield emit(AnswerEvent(None, "length", step))
                return
            if not turn.calls:
                transcript.messages.append(assistant)
                transcript.answer, transcript.stop_reason = turn.content or "", "answer"
                yield emit(AnswerEvent(transcript.answer, "answer", step))
                return
            assistant["tool_calls"] = [{"id": c.id, "type": "function",
                                        "function": {"name": c.name, "arguments": c.arguments_json()}}
                                       for c in turn.calls]
            transcript.messages.append(assistant)
            by_name = {t.name: t for t in tools}
            for call in turn.calls:
                tool = by_name.get(call.name)
                yield emit(ToolCallEvent(step, call.id, call.name, tool.server if tool else None, call.arguments,
                                         call.repaired))
                result = self._run_call(step, call, tool, tools)
                transcript.messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                            "content": result.content})
                yield emit(result)
        transcript.answer, transcript.stop_reason = None, "max_steps"
        yield emit(AnswerEvent(None, "max_steps", self.max_steps))

    def _run_call(self, step: int, call: ParsedCall, tool: AgentTool | None, tools: list[AgentTool]) -> ToolResultEvent:
        def refuse(status: str, text: str) -> ToolResultEvent:
            return ToolResultEvent(step, call.id, call.name, status, True, f"Error: {text}")

        if call.problem is not None:
            return refuse("malformed", call.problem)
        if tool is None:
            return refuse("unknown_tool", f"there is no tool named {call.name!r}; the tools are: "
                                          f"{', '.join(t.name for t in tools) or 'none'}")
        problem = argument_errors(tool, call.arguments)
        if problem is not None:
            return refuse("invalid_arguments", f"the arguments do not match the input schema of {tool.name!r}: "
                                               f"{problem}. Call it again with corrected arguments.")
        approved = tool.name in self.approve or tool.qualified in self.approve
        if self.confirm is not None and not approved and not self.confirm(tool, call.arguments):
            return refuse("declined", "the user declined this tool call")
        start = time.perf_counter()
        outcome = self.pool.call(tool.server, tool.tool, call.arguments)
        latency = (time.perf_counter() - start) * 1000
        text, truncated = truncate_result(outcome.text, self.max_result_chars)
        if outcome.is_error and not text.startswith("Error"):
            text = f"Error: {text}"
        status = outcome.failure or ("error" if outcome.is_error else "ok")
        return ToolResultEvent(step, call.id, call.name, status, outcome.is_error, text, outcome.structured,
                               truncated, round(latency, 3))
