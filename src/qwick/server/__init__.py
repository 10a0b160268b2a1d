"""OpenAI-compatible HTTP server (`qwick serve`); needs the `serve` extra (fastapi, uvicorn, prometheus_client)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwick.server.app import build_app
    from qwick.server.serving import ServerLimits

__all__ = ["ServerLimits", "build_app"]

# Imported on first use, so `qwick serve --help` needs neither fastapi nor the engine.
_LOCATIONS = {"build_app": "qwick.server.app", "ServerLimits": "qwick.server.serving"}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'qwick.server' has no attribute {name!r}")
