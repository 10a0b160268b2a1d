"""POST /v1/responses bodies (OpenAI's Responses API): the request, its input items and tools.

Input items and content parts are read leniently (one model each, checked per `type` in server/responses_chat.py),
so a bad item is named precisely (`input[3].call_id`) rather than by pydantic's union errors. The response
objects are built as plain dicts in server/responses_reply.py, in the shape the `openai` client parses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from qwick.server.leniency import Lenient
from qwick.server.protocol.base import OpenAIRequest


class ContentPartIn(Lenient):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class InputItem(Lenient):
    """A message (`type` may be left out), function_call, function_call_output or reasoning item."""

    model_config = ConfigDict(extra="allow")
    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[ContentPartIn] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPartIn] | None = None
    summary: list[ContentPartIn] | None = None  # reasoning items: summary_text parts


class FunctionTool(Lenient):
    """Flat function tools; other tool types (web_search, file_search...) are refused by name."""

    model_config = ConfigDict(extra="allow")
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(Lenient):
    type: Literal["function"]
    name: str


class ReasoningConfig(Lenient):
    model_config = ConfigDict(extra="allow")  # `summary`: Qwen3's reasoning is returned whole, not summarised
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None


class TextFormat(Lenient):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    type: Literal["text", "json_schema", "json_object"]
    name: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(Lenient):
    model_config = ConfigDict(extra="allow")  # `verbosity`: no such control on Qwen3
    format: TextFormat | None = None


class ResponsesRequest(OpenAIRequest):
    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool | None = None  # accepted; nothing is stored (see README)
    metadata: dict[str, Any] | None = None
    user: str | None = None
    # server-side state qwick does not keep: refused by name
    previous_response_id: str | None = None
    conversation: Any = None
    background: bool | None = None
    prompt: Any = None
