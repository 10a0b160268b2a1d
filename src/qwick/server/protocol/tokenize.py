"""POST /tokenize and /detokenize bodies (vLLM's extension endpoints)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from qwick.server.protocol.base import OpenAIRequest
from qwick.server.protocol.chat import ChatMessage, ToolDefinition


class TokenizeRequest(OpenAIRequest):
    model: str | None = None
    prompt: str | None = None
    add_special_tokens: bool = True
    messages: list[ChatMessage] | None = None
    tools: list[ToolDefinition] | None = None
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str | None] | None = None


class DetokenizeRequest(OpenAIRequest):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str
