"""A small MCP server for the agent tests, written with the `mcp` package's server API: typed calendar tools,
one that always fails (is_error), one that sleeps past a timeout, one that crashes the process, one with a
huge result. Every call is appended to the file named by $CALENDAR_LOG (one JSON line: tool, arguments).

Run: `python calendar_server.py` (stdio) or `python calendar_server.py --http PORT` (streamable HTTP)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

server = MCPServer("calendar")
EVENTS: list[dict] = []


def _log(tool: str, arguments: dict) -> None:
    path = os.environ.get("CALENDAR_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool()
def add_event(title: str, day: Literal["mon", "tue", "wed", "thu", "fri"], hour: int) -> str:
    """Put an event in the calendar."""
    _log("add_event", {"title": title, "day": day, "hour": hour})
    EVENTS.append({"title": title, "day": day, "hour": hour})
    return f"added event #{len(EVENTS)}: {title} on {day} at {hour}:00 (confirmation code CAL-{len(EVENTS):04d})"


@server.tool()
def set_alarm(day: Literal["mon", "tue", "wed"], hour: Annotated[int, Field(ge=0, le=23)]) -> str:
    """Set an alarm."""
    _log("set_alarm", {"day": day, "hour": hour})
    return f"alarm set for {day} {hour}:00, confirmation code ALARM-{hour:02d}-{day.upper()}"


@server.tool()
def list_events(day: str) -> list[str]:
    """The events of a day."""
    _log("list_events", {"day": day})
    return [e["title"] for e in EVENTS if e["day"] == day]


@server.tool()
def always_fails(reason: str) -> str:
    """A tool that reports an error."""
    _log("always_fails", {"reason": reason})
    raise ToolError(f"the calendar is locked: {reason}")


@server.tool()
def slow(seconds: float) -> str:
    """Answers after `seconds`."""
    _log("slow", {"seconds": seconds})
    time.sleep(seconds)
    return "done"


@server.tool()
def crash() -> str:
    """Kills the server process."""
    _log("crash", {})
    os._exit(3)


@server.tool()
def huge() -> str:
    """A result of 50,000 characters."""
    _log("huge", {})
    return "0123456789" * 5000


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
