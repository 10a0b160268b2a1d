"""The MCP servers file that Claude Desktop, Cursor, Cline and mcphost read, parsed and checked once:
`{"mcpServers": {NAME: {"command", "args", "env", "cwd"} | {"url"}}}`.

Optional per-server keys other clients use are accepted: `type` (stdio / http / streamable-http), `disabled`,
`timeout` (seconds per tool call) and `autoApprove` (Cline; `alwaysAllow` is Roo Code's name): tools that run
without asking. Every error names the file, the server and the problem.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TOOL_TIMEOUT = 30.0  # seconds per tool call
DEFAULT_MAX_RESULT_CHARS = 6000  # a small model's context is precious: a longer tool result is cut, with a note
SERVER_KEYS = {"command", "args", "env", "cwd", "url", "type", "disabled", "timeout", "autoApprove", "alwaysAllow",
               "description"}
TRANSPORTS = {"stdio": "stdio", "http": "http", "streamable-http": "http", "streamableHttp": "http"}


class ConfigError(ValueError):
    """A bad MCP config: the message is one line naming the file, the server and the problem."""


@dataclass(frozen=True)
class ServerConfig:
    """One MCP server: a command to spawn (stdio) or a URL (streamable HTTP)."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    timeout: float | None = None  # seconds per tool call (None: the agent's default)
    auto_approve: tuple[str, ...] = ()  # tools (the server's own names) that run without confirmation

    @property
    def transport(self) -> str:
        return "http" if self.url is not None else "stdio"


@dataclass(frozen=True)
class McpConfig:
    servers: tuple[ServerConfig, ...]
    source: str = "<config>"  # the file it came from, for messages


def load_mcp_config(path: str | Path) -> McpConfig:
    """Read and check an MCP servers file; ConfigError (one line) on any problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"MCP config {source}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"MCP config {source}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg})") from None
    return parse_mcp_config(data, source, base_dir=Path(path).parent)


def as_mcp_config(value: McpConfig | dict[str, Any] | str | Path) -> McpConfig:
    """A config from a McpConfig, a parsed dict ({"mcpServers": ...}) or a file path."""
    if isinstance(value, McpConfig):
        return value
    if isinstance(value, dict):
        return parse_mcp_config(value)
    return load_mcp_config(value)


def parse_mcp_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> McpConfig:
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers"), dict):
        raise ConfigError(f"MCP config {source}: expected an object with \"mcpServers\": {{NAME: {{\"command\": ..., "
                          f"\"args\": [...]}} | {{\"url\": ...}}}}")
    servers = []
    for name, raw in data["mcpServers"].items():
        server = _server(name, raw, f"MCP config {source}: server {name!r}", base_dir)
        if server is not None:
            servers.append(server)
    if not servers:
        raise ConfigError(f"MCP config {source}: \"mcpServers\" names no enabled server")
    return McpConfig(tuple(servers), source)


def _server(name: str, raw: Any, where: str, base_dir: Path | None) -> ServerConfig | None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object with \"command\" or \"url\", got {type(raw).__name__}")
    if not name or "__" in name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}: a server name must be letters, digits, '-' or single '_' (tools are named "
                          "SERVER__TOOL)")
    unknown = sorted(set(raw) - SERVER_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(SERVER_KEYS))}")
    if raw.get("disabled") is True:
        return None
    kind = raw.get("type")
    if kind is not None and kind not in TRANSPORTS:
        raise ConfigError(f"{where}: type {kind!r} is not supported; use stdio or http (streamable HTTP; the "
                          "older SSE transport is not supported)")
    has_command, has_url = "command" in raw, "url" in raw
    if has_command == has_url:
        raise ConfigError(f"{where}: give either \"command\" (a stdio server) or \"url\" (streamable HTTP)"
                          + (", not both" if has_command else ""))
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not math.isfinite(timeout) or timeout <= 0):
        raise ConfigError(f"{where}: timeout must be a positive number of seconds, got {timeout!r}")
    approve = raw.get("autoApprove", raw.get("alwaysAllow", []))
    if not isinstance(approve, list) or not all(isinstance(t, str) for t in approve):
        raise ConfigError(f"{where}: autoApprove must be a list of tool names, got {approve!r}")
    common = {"name": name, "timeout": float(timeout) if timeout is not None else None,
              "auto_approve": tuple(approve)}
    if has_url:
        url = raw["url"]
        if kind == "stdio" or not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: url must be an http:// or https:// URL of a streamable HTTP server, "
                              f"got {url!r}")
        return ServerConfig(url=url, **common)
    return ServerConfig(command=_command(raw["command"], raw.get("cwd"), where, base_dir),
                        args=_args(raw.get("args", []), where), env=_env(raw.get("env", {}), where),
                        cwd=raw.get("cwd"), **common)


def _command(command: Any, cwd: Any, where: str, base_dir: Path | None) -> str:
    if not isinstance(command, str) or not command.strip():
        raise ConfigError(f"{where}: command must be a non-empty string, got {command!r}")
    if cwd is not None and not (isinstance(cwd, str) and Path(cwd).is_dir()):
        raise ConfigError(f"{where}: cwd {cwd!r} is not a folder")
    # a relative path is tried against cwd, then the config file's folder; the spawn gets the resolved path
    places = [command] + [str(Path(base) / command) for base in (cwd, base_dir) if base and "/" in command]
    found = next((hit for hit in map(shutil.which, places) if hit is not None), None)
    if found is None:
        raise ConfigError(f"{where}: command {command!r} was not found (not on PATH, or not executable)")
    return command if found == shutil.which(command) else found


def _args(args: Any, where: str) -> tuple[str, ...]:
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}: args must be a list of strings, got {args!r}")
    return tuple(args)


def _env(env: Any, where: str) -> dict[str, str]:
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError(f"{where}: env must be an object of string values, got {env!r}")
    return dict(env)
