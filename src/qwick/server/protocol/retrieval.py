"""POST /v1/retrieve and /v1/answer bodies (qwick's own API: unknown fields are rejected, a typo must not
silently change what is searched)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    index: str = Field(min_length=1)
    query: str = Field(min_length=1)
    top_k: int = Field(10, ge=1, le=1000)
    mode: Literal["hybrid", "vector", "bm25"] = "hybrid"
    rerank: bool = False


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    index: str = Field(min_length=1)
    question: str = Field(min_length=1)
    top_k: int = Field(5, ge=1, le=100)
    rerank: bool | None = None  # default: rerank (and refuse hits under the relevance threshold)
    response_format: Literal["text", "json"] = "text"  # json: {"answer", "citations"} through a schema
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    seed: int | None = None
