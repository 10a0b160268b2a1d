"""The grammar that forces Qwen3's Hermes tool calls: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`.

Shared by every caller that forces a call (chat `tool_choice`, Anthropic `tool_choice`, the Responses API, the
MCP agent): each call's name is one of the given functions and its arguments match that function's JSON schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from qwick.tokenizer.tool_calls import TOOL_CALL_END, TOOL_CALL_START


def check_tool_name(name: str) -> str | None:
    """Why `name` cannot be forced (it holds a marker that would end the call early), or None."""
    if TOOL_CALL_START in name or TOOL_CALL_END in name:
        return (f"tool name {name!r} contains a {TOOL_CALL_START} / {TOOL_CALL_END} marker, which would end the "
                "forced tool call early")
    return None


def tool_calls_lark(functions: Sequence[Mapping[str, Any]], parallel: bool) -> str:
    """A lark grammar (llguidance) of one call, or one or more with `parallel`, to the `functions`
    (`{"name": str, "parameters": JSON schema | None}` each; no parameters means any object)."""
    variants = [
        {"type": "object",
         "properties": {"name": {"const": f["name"]},
                        "arguments": f.get("parameters") or {"type": "object"}},
         "required": ["name", "arguments"], "additionalProperties": False}
        for f in functions
    ]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    options = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    body = json.dumps({**schema, "x-guidance": options})
    start = 'start: call ("\\n" call)*' if parallel else "start: call"
    return f'{start}\ncall: <tool_call> "\\n" body "\\n" </tool_call>\nbody: %json {body}\n'
