"""Request bodies of the gate endpoints (/v1/moderate, /classify, /rewrite, /extract, /score, /rerank) and
/v1/embeddings. Gate bodies are qwick's own API, so unknown fields are rejected (a typo must not silently
change a decision); /v1/embeddings, /v1/rerank and vLLM's /v1/score body follow their APIs and ignore unknown
fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qwick.server.protocol.base import OpenAIRequest

MAX_ITEMS = 1024  # items per /v1/score request
MAX_LABELS = 64
MAX_INPUTS = 2048  # inputs per /v1/embeddings request (OpenAI's limit)


class GateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    model: str | None = None
    gate: str | None = Field(None, min_length=1)  # "" names no gate: a 400, never a silent default


class ModerateRequest(GateRequest):
    text: str
    user_id: str | None = Field(None, alias="userId")


class ClassifyRequest(GateRequest):
    text: str
    labels: list[str] | None = Field(None, min_length=2, max_length=MAX_LABELS)


class RewriteRequest(GateRequest):
    text: str


class ScoreRequest(GateRequest):
    query: str
    items: list[str] = Field(min_length=1, max_length=MAX_ITEMS)
    instruction: str | None = None


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str


class RerankRequest(OpenAIRequest):
    """Cohere's / Jina's rerank body (vLLM's too); other fields those APIs define are ignored, with a warning."""

    model: str | None = None
    query: str
    documents: list[str | RerankDocument] = Field(min_length=1, max_length=MAX_ITEMS)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    instruction: str | None = None  # qwick's: the relevance instruction (default: the score gate's)


class PairScoreRequest(OpenAIRequest):
    """vLLM's /v1/score body: `text_1` scored against each of `text_2`."""

    model: str | None = None
    text_1: str
    text_2: str | list[str]
    instruction: str | None = None


class EmbeddingRequest(OpenAIRequest):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
