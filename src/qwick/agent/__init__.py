"""The MCP agent: `Agent(llm_or_base_url, mcp=config)` runs a model against the tools of MCP servers
(`qwick agent`, `qwick chat --mcp`). Names are imported on first use, so the CLI's parser stays light."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwick.agent.config import ConfigError, McpConfig, ServerConfig, load_mcp_config
    from qwick.agent.events import AnswerEvent, ModelStep, Notice, ToolCallEvent, ToolResultEvent, Transcript
    from qwick.agent.loop import Agent

__all__ = ["Agent", "AnswerEvent", "ConfigError", "McpConfig", "ModelStep", "Notice", "ServerConfig",
           "ToolCallEvent", "ToolResultEvent", "Transcript", "load_mcp_config"]
_LOCATIONS = {"Agent": "qwick.agent.loop", **dict.fromkeys(
    ("ConfigError", "McpConfig", "ServerConfig", "load_mcp_config"), "qwick.agent.config"), **dict.fromkeys(
    ("AnswerEvent", "ModelStep", "Notice", "ToolCallEvent", "ToolResultEvent", "Transcript"), "qwick.agent.events")}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'qwick.agent' has no attribute {name!r}")
