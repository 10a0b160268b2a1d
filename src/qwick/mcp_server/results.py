"""The structured results of the gate tools (their MCP output schemas): the same fields as the HTTP gate
endpoints' JSON (`/v1/moderate` ...), so a decision reads the same over MCP and over HTTP."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class GateFields(BaseModel):
    """What every gate answer carries (the HTTP endpoints' common fields)."""

    gate: str = Field(description="the gate that decided")
    timed_out: bool = Field(description="the gate's deadline passed; its on_timeout policy decided")
    latency_ms: float
    request_id: str = Field(description="the decision's id in the ledger")


class ModerateResult(GateFields):
    allow: bool | None = Field(description="true iff P(safe) >= the gate's threshold")
    reason: str | None = Field(description="the top unsafe category, 'none' when allowed, 'timeout' on a timeout")
    escalate: bool = Field(description="a close call: a person (or a bigger model) should look")
    scores: dict[str, float] = Field(description="probability of each category (exact, normalised)")


class ClassifyResult(GateFields):
    label: str | None = Field(description="the most probable label (null on a timeout)")
    scores: dict[str, float] = Field(description="probability of each label (exact, normalised)")
    escalate: bool


class RewriteResult(GateFields):
    rewrite: str = Field(description="the rewritten text (the input unchanged when no valid answer came)")
    reason_code: str | None
    output: dict[str, Any] | None = Field(description="the whole JSON answer, when it fits the gate's schema")
    schema_valid: bool | None
    escalate: bool


class ExtractResult(GateFields):
    data: dict[str, Any] | None = Field(description="the extracted JSON (null unless it fits the schema)")
    schema_valid: bool | None = Field(description="the answer validates against the schema")
    escalate: bool


class ScoreResult(GateFields):
    scores: list[float] | None = Field(description="P(relevant) of each item, in item order (null on a timeout)")


class EmbedResult(BaseModel):
    embeddings: list[list[float]] = Field(description="one L2-normalised vector per text, in order")
    dimensions: int
    prompt_tokens: int
