"""The MCP servers of one agent session: started and stopped by qwick, their tools listed, tools called with a
per-call timeout.

The agent loop is synchronous (the offline engine steps in the caller's thread), so the `mcp` client's
asyncio side runs in one background event loop (an anyio blocking portal) that every server shares. A server
that fails to start, crashes or times out is reported and dropped; the session goes on with the others.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from qwick.agent.config import DEFAULT_TOOL_TIMEOUT, McpConfig, ServerConfig

CONNECT_TIMEOUT = 30.0  # seconds to spawn/connect, initialize and list tools


@dataclass(frozen=True)
class ServerTool:
    """A tool as its server lists it."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ToolOutcome:
    """What a call returned: the text the model sees, whether it is an error, the structured result if any.
    `failure` is set when the server itself failed ("timeout", "server_failed"): it was dropped."""

    text: str
    is_error: bool
    structured: dict[str, Any] | None = None
    failure: str | None = None


class ServerPool:
    """Start with `start()` (returns notices about servers that could not start), `call(...)`, then `close()`."""

    def __init__(self, config: McpConfig, tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT, errlog: TextIO | None = None) -> None:
        self.config = config
        self.tool_timeout = tool_timeout
        self.connect_timeout = connect_timeout
        self.errlog = errlog  # where stdio servers' stderr goes (default: this process's stderr)
        self.tools: list[ServerTool] = []
        self._portal_cm: Any = None
        self._portal: BlockingPortal | None = None
        self._clients: dict[str, tuple[Any, Any]] = {}  # server -> (its context manager, its mcp Client)
        self._servers = {s.name: s for s in config.servers}

    @property
    def alive(self) -> list[str]:
        return list(self._clients)

    def start(self) -> list[str]:
        """Connect every server and list its tools; a server that fails is left out with a notice."""
        try:
            import mcp  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"MCP needs the agents extra: pip install 'qwick[agents]' ({exc})") from None
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        notices = []
        for server in self.config.servers:
            try:
                self._connect(server)
            except Exception as exc:  # any failure of one server: report it, go on without it
                self._drop(server.name)
                notices.append(f"MCP server {server.name!r} ({_target(server)}) could not start: {describe(exc)}")
        return notices

    def _connect(self, server: ServerConfig) -> None:
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client

        assert self._portal is not None
        if server.url is not None:
            target: Any = server.url
        else:
            params = StdioServerParameters(command=server.command or "", args=list(server.args),
                                           env=server.env or None, cwd=server.cwd)
            target = stdio_client(params, errlog=self.errlog or sys.stderr)
        manager = self._portal.wrap_async_context_manager(Client(target, read_timeout_seconds=self.connect_timeout))
        client = manager.__enter__()
        self._clients[server.name] = (manager, client)
        listed = self._portal.call(_list_tools, client, self.connect_timeout)
        self.tools.extend(ServerTool(server.name, t.name, t.description or "", dict(t.input_schema or {}))
                          for t in listed)

    def call(self, server: str, tool: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Call `tool` on `server`; a timeout or a dead connection drops the server (see ToolOutcome)."""
        if server not in self._clients:
            return ToolOutcome(f"MCP server {server!r} is not available (it failed earlier)", True,
                               failure="server_failed")
        assert self._portal is not None
        timeout = self._servers[server].timeout or self.tool_timeout
        try:
            result = self._portal.call(_call_tool, self._clients[server][1], tool, arguments, timeout)
        except TimeoutError:
            self._drop(server)
            return ToolOutcome(f"the tool {tool!r} of MCP server {server!r} did not answer within {timeout:g} s; "
                               "the server was stopped and its tools are no longer available", True,
                               failure="timeout")
        except Exception as exc:
            self._drop(server)
            return ToolOutcome(f"MCP server {server!r} failed during {tool!r} ({describe(exc)}); its tools are no "
                               "longer available", True, failure="server_failed")
        structured = result.structured_content if isinstance(result.structured_content, dict) else None
        return ToolOutcome(result_text(result.content, structured), bool(result.is_error), structured)

    def _drop(self, server: str) -> None:
        entry = self._clients.pop(server, None)
        self.tools = [t for t in self.tools if t.server != server]
        if entry is not None:
            with contextlib.suppress(Exception):  # a dead server's transport may fail to close cleanly
                entry[0].__exit__(None, None, None)

    def close(self) -> None:
        for server in list(self._clients):
            self._drop(server)
        if self._portal_cm is not None:
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = self._portal = None


async def _list_tools(client: Any, timeout: float) -> list[Any]:
    tools, cursor = [], None
    with anyio.fail_after(timeout):
        while True:
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools


async def _call_tool(client: Any, tool: str, arguments: dict[str, Any], timeout: float) -> Any:
    from mcp import MCPError

    with anyio.fail_after(timeout):
        try:
            return await client.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except MCPError as exc:
            if exc.error.code == -32001:  # REQUEST_TIMEOUT: the session's own clock ran out first
                raise TimeoutError from exc
            raise


def result_text(content: list[Any], structured: dict[str, Any] | None) -> str:
    """A tool result as text for the model: its text blocks; the structured result when there are none."""
    parts = []
    for block in content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} result ({getattr(block, 'mime_type', '?')}) not shown to the model]")
        elif kind == "resource_link":
            parts.append(f"[resource {getattr(block, 'uri', '?')}]")
        elif kind == "resource":
            inner = getattr(block, "resource", None)
            parts.append(getattr(inner, "text", None) or f"[resource {getattr(inner, 'uri', '?')}]")
    if not parts and structured is not None:
        return json.dumps(structured, ensure_ascii=False)
    return "\n".join(parts)


def describe(exc: BaseException) -> str:
    """One line for an exception, the leaves of an exception group (the mcp client raises those) included."""
    leaves = getattr(exc, "exceptions", None)  # an ExceptionGroup (not a builtin name before Python 3.11)
    if isinstance(leaves, tuple) and leaves:
        return "; ".join(dict.fromkeys(describe(e) for e in leaves))
    message = getattr(exc, "message", None)  # MCPError's str() is its args tuple
    message = message if isinstance(message, str) else str(exc)
    text = message.strip().splitlines()[0] if message.strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _target(server: ServerConfig) -> str:
    return server.url or " ".join([server.command or "", *server.args])
