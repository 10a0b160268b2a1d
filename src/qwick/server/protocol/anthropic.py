"""POST /v1/messages and /v1/messages/count_tokens bodies (Anthropic's Messages API): the request, its content
blocks, the message, and the streamed events.

Blocks and tools keep unknown keys (`cache_control`, `citations`...: hints qwick has no use for); an unknown
block `type` is refused by validation, naming the block.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qwick.server.leniency import Lenient
from qwick.server.protocol.base import OpenAIRequest


class Block(Lenient):
    model_config = ConfigDict(extra="allow")


class TextBlockIn(Block):
    type: Literal["text"]
    text: str


class ToolUseBlockIn(Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlockIn(Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlockIn] | None = None  # text only: images in results are not supported
    is_error: bool = False


class ThinkingBlockIn(Block):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class UnsupportedBlockIn(Block):
    """Known Anthropic blocks qwick cannot use: refused by name with a 400 (not silently dropped)."""

    type: Literal["image", "document", "redacted_thinking", "search_result", "server_tool_use",
                  "web_search_tool_result", "container_upload"]


ContentBlockIn = Annotated[TextBlockIn | ToolUseBlockIn | ToolResultBlockIn | ThinkingBlockIn | UnsupportedBlockIn,
                           Field(discriminator="type")]


BLOCK_TYPES = ("text", "tool_use", "tool_result", "thinking")  # what qwick reads; UnsupportedBlockIn's are refused


class AnthropicMessage(Lenient):
    model_config = ConfigDict(extra="allow")
    role: Literal["user", "assistant"]
    content: str | list[ContentBlockIn]

    @field_validator("content", mode="before")
    @classmethod
    def _known_block_types(cls, content: Any) -> Any:
        """An unknown block type, named (pydantic alone would say "Input should be a valid string")."""
        known = (*BLOCK_TYPES, *typing.get_args(UnsupportedBlockIn.model_fields["type"].annotation))
        for j, block in enumerate(content if isinstance(content, list) else []):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in known:
                raise ValueError(f"content[{j}].type {kind!r} is not a content block type; qwick reads "
                                 f"{', '.join(BLOCK_TYPES)}")
        return content


class AnthropicTool(Lenient):
    """A client tool (`input_schema`); a server tool (`type` such as "web_search_20250305") is refused."""

    model_config = ConfigDict(extra="allow")
    type: str | None = None
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None  # type "tool"
    disable_parallel_tool_use: bool = False


class ThinkingConfig(Lenient):
    model_config = ConfigDict(extra="allow")  # `display`: Qwen3's thinking is always shown
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class OutputFormat(Lenient):
    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(Lenient):
    model_config = ConfigDict(extra="allow")
    format: OutputFormat | None = None


class CountTokensRequest(OpenAIRequest):
    """The fields that decide the prompt; `/v1/messages` adds generation's."""

    model: str
    messages: list[AnthropicMessage]
    system: str | list[TextBlockIn] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    # Anthropic features that would change the answer and that qwick cannot honour: refused by name
    mcp_servers: list[Any] | None = None
    container: Any = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int
    stop_sequences: list[str] | None = None
    stream: bool = False
    # not in the current SDK's signature: it sends them through `extra_body`, which lands here all the same
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: dict[str, Any] | None = None


# ------------------------------------------------------------------------------------------------ responses


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""  # qwick signs nothing: see README (Anthropic clients pass it back unread)


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: Any  # the model's JSON arguments; an object whenever the call was forced by the grammar


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class AnthropicResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None = None
    usage: AnthropicUsage


class TokenCount(BaseModel):
    input_tokens: int
