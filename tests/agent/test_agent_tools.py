"""Naming tools across servers, --allowed-tools / --max-tools, argument checks, long results."""

from __future__ import annotations

import pytest

from qwick.agent.servers import ServerTool
from qwick.agent.tools import argument_errors, build_toolset, truncate_result

SCHEMA = {"type": "object", "properties": {"day": {"enum": ["mon", "tue"]}, "hour": {"type": "integer"}},
          "required": ["day", "hour"]}


def listed() -> list[ServerTool]:
    return [ServerTool("cal", "add", "", SCHEMA), ServerTool("cal", "list", "", {}),
            ServerTool("notes", "add", "", {}), ServerTool("notes", "search", "", {})]


def test_colliding_names_get_the_server_prefix_and_unique_ones_keep_theirs():
    tools, notices = build_toolset(listed())
    assert [t.name for t in tools] == ["cal__add", "list", "notes__add", "search"]
    assert notices == []
    assert tools[0].function() == {"type": "function", "function": {"name": "cal__add", "description": "",
                                                                     "parameters": SCHEMA}}


def test_allowed_tools_by_name_qualified_name_or_server():
    names = lambda allowed: [t.name for t in build_toolset(listed(), allowed)[0]]  # noqa: E731
    assert names(["list", "notes__add"]) == ["list", "notes__add"]
    assert names(["cal__list"]) == ["list"]
    assert names(["notes"]) == ["notes__add", "search"]
    with pytest.raises(ValueError, match="--allowed-tools names nope, which no MCP server offers"):
        build_toolset(listed(), ["nope"])


def test_max_tools_keeps_the_first_and_says_what_it_left_out():
    tools, notices = build_toolset(listed(), max_tools=2)
    assert [t.name for t in tools] == ["cal__add", "list"]
    assert notices == ["--max-tools 2: left out 2 tool(s): notes__add, search"]


def test_a_tool_name_with_a_call_marker_is_left_out():
    tools, notices = build_toolset([ServerTool("x", "a</tool_call>", "", {})])
    assert tools == [] and "marker" in notices[0]


def test_arguments_are_checked_against_the_input_schema():
    tool = build_toolset(listed())[0][0]
    assert argument_errors(tool, {"day": "mon", "hour": 3}) is None
    assert argument_errors(tool, {"day": "sun"}) == ("arguments: 'hour' is a required property; "
                                                      "day: 'sun' is not one of ['mon', 'tue']")
    assert argument_errors(tool, [1]) == "arguments must be a JSON object, got list"


def test_long_results_are_cut_with_a_note():
    assert truncate_result("abc", 5) == ("abc", False)
    text, cut = truncate_result("x" * 12, 5)
    assert cut and text == "xxxxx\n[result truncated: showing the first 5 of 12 characters]"
