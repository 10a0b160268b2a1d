"""Request body of POST /v1/pipelines/{name} (qwick's own API: unknown fields are rejected)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PipelineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    text: str
    user_id: str | None = Field(None, alias="userId")
    vars: dict[str, Any] | None = None
