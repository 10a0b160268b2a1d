"""What an agent run reports as it goes (`Agent.events`), and the transcript it returns (`Agent.run`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Notice:
    """Something the person should know: a server that failed, tools left out."""

    text: str
    type: str = "notice"


@dataclass(frozen=True)
class ModelStep:
    """One generation finished. `forced`: the grammar made it tool calls; `prompt`: the rendered prompt
    (offline backend only; left out of the JSON transcript)."""

    step: int
    forced: bool
    content: str | None
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    prompt: str | None = field(default=None, repr=False)
    type: str = "model"


@dataclass(frozen=True)
class ToolCallEvent:
    """A call the model asked for, before it runs (`repaired`: what the tolerant parser fixed)."""

    step: int
    id: str
    name: str
    server: str | None
    arguments: Any
    repaired: str | None = None
    type: str = "tool_call"


@dataclass(frozen=True)
class ToolResultEvent:
    """What the model is told about a call. `status`: ok, error (the tool's is_error), invalid_arguments,
    unknown_tool, malformed, declined, timeout, server_failed."""

    step: int
    id: str
    name: str
    status: str
    is_error: bool
    content: str
    structured: dict[str, Any] | None = None
    truncated: bool = False
    latency_ms: float = 0.0
    type: str = "tool_result"


@dataclass(frozen=True)
class AnswerEvent:
    """The run ended: the final answer (None when it stopped first), and why it stopped (answer, max_steps,
    length: a forced call cut by max_tokens)."""

    text: str | None
    stop_reason: str
    steps: int
    type: str = "answer"


AgentEvent = Notice | ModelStep | ToolCallEvent | ToolResultEvent | AnswerEvent


@dataclass
class Transcript:
    """A whole run: the conversation (input and new messages, OpenAI-shaped), each call with its result, the
    answer, and the notices."""

    messages: list[dict[str, Any]]
    events: list[AgentEvent] = field(default_factory=list)
    answer: str | None = None
    stop_reason: str = "answer"
    steps: int = 0
    tools: list[str] = field(default_factory=list)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """Each call joined with its result: name, server, arguments, status, result."""
        calls = {e.id: {k: v for k, v in _plain(e).items() if k != "type"} for e in self.events
                 if isinstance(e, ToolCallEvent)}
        for e in self.events:
            if isinstance(e, ToolResultEvent) and e.id in calls:
                calls[e.id].update(status=e.status, is_error=e.is_error, result=e.content,
                                   structured=e.structured, truncated=e.truncated, latency_ms=e.latency_ms)
        return list(calls.values())

    @property
    def notices(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Notice)]

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "stop_reason": self.stop_reason, "steps": self.steps, "tools": self.tools,
                "tool_calls": self.tool_calls, "notices": self.notices, "messages": self.messages,
                "events": [_plain(e) for e in self.events]}


def _plain(event: AgentEvent) -> dict[str, Any]:
    data = asdict(event)
    data.pop("prompt", None)  # the rendered prompt repeats the messages
    return {"type": data.pop("type"), **data}
