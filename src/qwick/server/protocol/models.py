"""GET /v1/models bodies."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "qwick"
    root: str | None = None
    parent: str | None = None  # a LoRA adapter's base model (vLLM's field); None for the base model itself
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
