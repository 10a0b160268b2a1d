"""POST /v1/completions bodies: the request, its choices and logprobs (OpenAI's legacy shape)."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field

from qwick.server.protocol.base import SamplingFields, Usage


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]] | None  # null or "": see routes/completions.py
    max_tokens: int | None = 16  # OpenAI's and vLLM's default for completions; null = up to the context
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
