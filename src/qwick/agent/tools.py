"""The tools the model sees: MCP tools named uniquely across servers (`server__tool` where names collide),
filtered by --allowed-tools / --max-tools, as function definitions for the chat template and the grammar;
arguments checked against each tool's input schema before a call; long results cut with a note."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qwick.agent.config import DEFAULT_MAX_RESULT_CHARS
from qwick.agent.servers import ServerTool
from qwick.tokenizer.tool_grammar import check_tool_name

SEPARATOR = "__"


@dataclass(frozen=True)
class AgentTool:
    """A tool under the name the model uses (`name`), and where it lives (`server`, `tool`)."""

    name: str
    server: str
    tool: str
    description: str
    input_schema: dict[str, Any]

    @property
    def qualified(self) -> str:
        return f"{self.server}{SEPARATOR}{self.tool}"

    def function(self) -> dict[str, Any]:
        """The OpenAI-style definition the chat template renders."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.input_schema or {"type": "object"}}}


def build_toolset(listed: Sequence[ServerTool], allowed: Sequence[str] | None = None,
                  max_tools: int | None = None) -> tuple[list[AgentTool], list[str]]:
    """Name the listed tools, keep the allowed ones (a tool's name, `server__tool`, or a server's name for all
    its tools), at most `max_tools`; returns the tools and notices about what was left out."""
    counts = Counter(t.name for t in listed)
    tools, notices = [], []
    for t in listed:
        name = t.name if counts[t.name] == 1 else f"{t.server}{SEPARATOR}{t.name}"
        problem = check_tool_name(name)
        if problem is not None:
            notices.append(f"MCP server {t.server!r}: tool left out: {problem}")
            continue
        tools.append(AgentTool(name, t.server, t.name, t.description, t.input_schema))
    if allowed is not None:
        wanted = set(allowed)
        known = {n for t in tools for n in (t.name, t.qualified, t.server)}
        missing = sorted(wanted - known)
        if missing:
            raise ValueError(f"--allowed-tools names {', '.join(missing)}, which no MCP server offers; tools: "
                             f"{', '.join(t.name for t in tools) or 'none'}")
        tools = [t for t in tools if wanted & {t.name, t.qualified, t.server}]
    if max_tools is not None and len(tools) > max_tools:
        left = [t.name for t in tools[max_tools:]]
        notices.append(f"--max-tools {max_tools}: left out {len(left)} tool(s): {', '.join(left)}")
        tools = tools[:max_tools]
    return tools, notices


def argument_errors(tool: AgentTool, arguments: Any) -> str | None:
    """Why `arguments` do not fit the tool's input schema (one line per problem), or None."""
    import jsonschema

    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}"
    schema = tool.input_schema or {"type": "object"}
    try:
        validator = jsonschema.validators.validator_for(schema)(schema)
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    except jsonschema.SchemaError as exc:
        return f"the tool's own input schema is invalid ({exc.message}); it cannot be called safely"
    if not errors:
        return None
    return "; ".join(f"{'/'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}" for e in errors[:5])


def truncate_result(text: str, limit: int = DEFAULT_MAX_RESULT_CHARS) -> tuple[str, bool]:
    """The result as the model gets it: at most `limit` characters, with a note saying it was cut."""
    if len(text) <= limit:
        return text, False
    return (f"{text[:limit]}\n[result truncated: showing the first {limit} of {len(text)} characters]", True)
