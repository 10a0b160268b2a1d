"""POST /v1/chat/completions bodies: the request (messages, tools, vLLM's extras), the completion, the chunks.

Stream deltas drop their unset (None) fields, as OpenAI's chunks do.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from qwick.server.leniency import Lenient
from qwick.server.protocol.base import SamplingFields, Usage


class ContentPart(Lenient):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    refusal: str | None = None  # an assistant's `refusal` part


class FunctionCall(Lenient):
    name: str
    arguments: str


class ToolCallIn(Lenient):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Lenient):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]  # function: legacy tool result
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    function_call: FunctionCall | None = None  # legacy form of one tool call
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class FunctionDefinition(Lenient):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedToolChoice(Lenient):
    type: Literal["function"] = "function"
    function: dict[str, Any]


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]

class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None  # legacy tools
    function_call: Literal["none", "auto"] | dict[str, Any] | None = None  # legacy tool_choice
    reasoning_effort: ReasoningEffort | None = None  # Qwen3 thinks or not: see chat_compat.py
    # options that would change the answer and that qwick cannot honour: refused by name (chat_compat.py)
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    # vLLM extras
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    max_thinking_tokens: int | None = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None  # required by the contract; qwick never refuses


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None  # required by the contract (nullable); qwick never refuses
    reasoning_content: str | None = None
    reasoning: str | None = None  # vLLM >= 0.11's name for reasoning_content; both are sent
    tool_calls: list[ToolCallOut] | None = None  # omitted when None: the contract wants an array or nothing

    @model_serializer(mode="wrap")
    def _drop_no_tool_calls(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if out.get("tool_calls") is None:
            out.pop("tool_calls", None)
        return out


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class SparseModel(BaseModel):
    """Serialises without its None fields: a delta says only what changed."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class FunctionDelta(SparseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDeltaOut(SparseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta | None = None


class ChatDelta(SparseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallDeltaOut] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
