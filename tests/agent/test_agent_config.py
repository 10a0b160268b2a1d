"""The MCP servers file: what is accepted, and one-line errors naming the file, the server and the problem."""

from __future__ import annotations

import json
import sys

import pytest

from qwick.agent.config import ConfigError, load_mcp_config, parse_mcp_config
from qwick.cli import main


def write(tmp_path, data) -> str:
    path = tmp_path / "mcp.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_stdio_and_url_servers_are_read(tmp_path):
    config = load_mcp_config(write(tmp_path, {"mcpServers": {
        "cal": {"command": sys.executable, "args": ["-m", "x"], "env": {"A": "1"}, "autoApprove": ["list_events"]},
        "web": {"url": "http://127.0.0.1:9/mcp", "timeout": 5},
        "off": {"command": "does-not-exist", "disabled": True}}}))
    cal, web = config.servers
    assert (cal.name, cal.transport, cal.args, cal.env, cal.auto_approve) == (
        "cal", "stdio", ("-m", "x"), {"A": "1"}, ("list_events",))
    assert (web.transport, web.url, web.timeout) == ("http", "http://127.0.0.1:9/mcp", 5.0)


@pytest.mark.parametrize(("data", "expected"), [
    ("{not json", "not valid JSON (line 1, column 2"),
    ({"servers": {}}, 'expected an object with "mcpServers"'),
    ({"mcpServers": {}}, "names no enabled server"),
    ({"mcpServers": {"cal": {"command": "qwick-no-such-command-xyz"}}},
     "server 'cal': command 'qwick-no-such-command-xyz' was not found"),
    ({"mcpServers": {"cal": {"args": ["x"]}}}, "server 'cal': give either \"command\""),
    ({"mcpServers": {"cal": {"command": "python3", "url": "http://x"}}}, "not both"),
    ({"mcpServers": {"cal": {"command": "python3", "args": "-m x"}}}, "server 'cal': args must be a list"),
    ({"mcpServers": {"cal": {"command": "python3", "env": {"A": 1}}}}, "server 'cal': env must be an object"),
    ({"mcpServers": {"cal": {"url": "ftp://x"}}}, "server 'cal': url must be an http:// or https:// URL"),
    ({"mcpServers": {"cal": {"url": "http://x", "type": "sse"}}}, "type 'sse' is not supported"),
    ({"mcpServers": {"cal": {"command": "python3", "comand": "x"}}}, "server 'cal': unknown key(s) comand"),
    ({"mcpServers": {"cal": {"command": "python3", "timeout": 0}}}, "timeout must be a positive number"),
    ({"mcpServers": {"a__b": {"command": "python3"}}}, "a server name must be"),
    ({"mcpServers": {"cal": ["python3"]}}, "server 'cal': expected an object"),
])
def test_bad_config_names_the_file_server_and_problem(tmp_path, data, expected):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_mcp_config(path)
    message = str(info.value)
    assert message.startswith(f"MCP config {path}: ") and expected in message
    assert "\n" not in message


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        load_mcp_config(tmp_path / "nope.json")


def test_a_relative_command_is_found_next_to_the_config(tmp_path):
    script = tmp_path / "server.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    config = load_mcp_config(write(tmp_path, {"mcpServers": {"s": {"command": "./server.sh"}}}))
    assert config.servers[0].command == str(script)


def test_parse_takes_a_dict():
    assert parse_mcp_config({"mcpServers": {"w": {"url": "https://example.com/mcp"}}}).servers[0].name == "w"


@pytest.mark.parametrize("command", ["agent", "chat"])
def test_cli_bad_config_is_one_line_and_exit_2_before_the_model_loads(tmp_path, capsys, command):
    path = write(tmp_path, {"mcpServers": {"cal": {"command": "qwick-no-such-command-xyz"}}})
    extra = ["-p", "hi"] if command == "agent" else []
    # the model folder does not exist either: the config is checked first
    assert main([command, str(tmp_path / "no-model"), "--mcp", path, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"qwick: error: MCP config {path}: server 'cal': command 'qwick-no-such-command-xyz' was "
                   "not found (not on PATH, or not executable)")


def test_cli_config_that_is_not_json(tmp_path, capsys):
    path = write(tmp_path, '{"mcpServers": ')
    assert main(["agent", "m", "--mcp", path, "-p", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"qwick: error: MCP config {path}: not valid JSON") and "\n" not in err
