"""`qwick agent MODEL --mcp CONFIG.json [-p PROMPT]`: a model with the tools of MCP servers, and the agent
side of `qwick chat MODEL --mcp CONFIG.json`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from qwick.agent.config import DEFAULT_MAX_RESULT_CHARS, DEFAULT_TOOL_TIMEOUT, load_mcp_config

# the main CLI's helpers (it sits above this package): add MODEL/--dtype/... to a parser; load the LLM they name
AddModelArgs = Callable[[argparse.ArgumentParser], None]
LoadLLM = Callable[..., Any]


def register_agent_commands(sub: Any, add_model_args: AddModelArgs, load_llm: LoadLLM) -> None:
    """Add `agent` to the main `qwick` parser's subparsers."""
    parser = sub.add_parser(
        "agent", help="run a model with the tools of MCP servers",
        description="Run MODEL (offline, or the model of an OpenAI-compatible server with --base-url) as an agent "
                    "over the tools of the MCP servers in CONFIG ({\"mcpServers\": {NAME: {\"command\", \"args\", "
                    "\"env\"} | {\"url\"}}}). Each tool call is shown and confirmed unless --yes. With -p: one task, "
                    "then exit (0 on an answer, 1 if it stopped first); without: an interactive chat.")
    add_model_args(parser)
    add_agent_args(parser, required=True)
    parser.add_argument("-p", "--prompt", default=None, help="run this one task non-interactively")
    parser.add_argument("--json", action="store_true",
                        help="with -p: print the transcript (messages, tool calls, results, answer) as one JSON object")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--base-url", default=None,
                        help="an OpenAI-compatible server (e.g. a running `qwick serve`: http://127.0.0.1:8000/v1) "
                             "instead of loading MODEL; MODEL is then the served model name (default: its first)")
    parser.add_argument("--api-key", default=None, help="with --base-url: the server's API key")
    parser.add_argument("--max-tokens", type=int, default=2048, help="tokens per model step (default 2048)")
    parser.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's)")
    parser.add_argument("--max-thinking-tokens", type=int, default=None, help="thinking budget per step")
    parser.set_defaults(handler=lambda args: run_agent_command(args, load_llm))


def add_agent_args(parser: argparse.ArgumentParser, required: bool) -> None:
    """The agent's options (also on `qwick chat`, where --mcp is optional)."""
    group = parser.add_argument_group("MCP tools")
    group.add_argument("--mcp", required=required, default=None, metavar="CONFIG.json",
                       help="MCP servers file: {\"mcpServers\": {NAME: {\"command\", \"args\", \"env\"} | {\"url\"}}}")
    group.add_argument("--max-steps", type=int, default=8, help="model steps per task (default 8)")
    group.add_argument("--tool-choice", default="auto", choices=["auto", "required"],
                       help="required: the first step must call a tool (forced by the grammar)")
    group.add_argument("--yes", action="store_true", help="run tool calls without asking")
    group.add_argument("--allowed-tools", nargs="+", default=None, metavar="TOOL",
                       help="offer only these tools (a tool's name, SERVER__TOOL, or a server's name for all of it)")
    group.add_argument("--max-tools", type=int, default=None, help="offer at most N tools (small models get lost)")
    group.add_argument("--tool-timeout", type=float, default=DEFAULT_TOOL_TIMEOUT,
                       help=f"seconds per tool call; a server that exceeds it is stopped (default {DEFAULT_TOOL_TIMEOUT:g})")
    group.add_argument("--max-result-chars", type=int, default=DEFAULT_MAX_RESULT_CHARS,
                       help=f"a longer tool result is cut, with a note to the model (default {DEFAULT_MAX_RESULT_CHARS})")
    if "--no-think" not in parser._option_string_actions:
        group.add_argument("--no-think", action="store_true", help="thinking off")


def run_agent_command(args: argparse.Namespace, load_llm: LoadLLM) -> int:
    from qwick.engine.args import DEFAULT_MODEL

    if args.json and args.prompt is None:
        raise ValueError("--json needs -p PROMPT (one task)")
    config = load_mcp_config(args.mcp)  # a bad file fails before the model loads
    if args.base_url is not None:
        target: Any = args.base_url
    else:
        args.model = args.model or DEFAULT_MODEL
        target = load_llm(args)
    agent = build_agent(target, config, args, model=args.model if args.base_url else None,
                        api_key=args.api_key, max_tokens=args.max_tokens, temperature=args.temperature,
                        max_thinking_tokens=args.max_thinking_tokens, seed=getattr(args, "seed", None))
    with agent:
        if args.prompt is None:
            from qwick.agent.console import run_agent_repl

            return run_agent_repl(agent, sys.stdout, sys.stdin, model=str(args.model or target), system=args.system)
        return run_task(agent, args.prompt, args.system, args.json)


def build_agent(target: Any, config: Any, args: argparse.Namespace, **options: Any) -> Any:
    """The Agent the parsed agent flags describe, over `target` (an LLM or a base URL)."""
    from qwick.agent.console import terminal_confirm
    from qwick.agent.loop import Agent

    confirm = None if args.yes else terminal_confirm(sys.stderr, lambda: sys.stdin.readline() or None)
    return Agent(target, config, tool_choice=args.tool_choice, max_steps=args.max_steps, thinking=not args.no_think,
                 allowed_tools=_tool_list(args.allowed_tools), max_tools=args.max_tools,
                 tool_timeout=args.tool_timeout, max_result_chars=args.max_result_chars, confirm=confirm, **options)


def run_task(agent: Any, prompt: str, system: str | None, as_json: bool) -> int:
    """One task: events on stderr as they happen, the answer (or the JSON transcript) on stdout."""
    from qwick.agent.console import show_event
    from qwick.agent.events import Transcript

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    transcript = Transcript([])
    for event in agent.events(messages, transcript):
        show_event(event, sys.stderr, answer=False)
    if as_json:
        print(json.dumps(transcript.to_dict(), ensure_ascii=False))
    elif transcript.answer is not None:
        print(transcript.answer)
    return 0 if transcript.stop_reason == "answer" else 1


def run_chat_with_tools(args: argparse.Namespace, load_llm: LoadLLM) -> int:
    """`qwick chat MODEL --mcp CONFIG.json`: the chat REPL with each turn run through the agent."""
    from qwick.agent.console import run_agent_repl

    if args.lora is not None:
        raise ValueError("--lora is not supported with --mcp yet: the agent runs the base model")
    config = load_mcp_config(args.mcp)  # a bad file fails before the model loads
    agent = build_agent(load_llm(args), config, args, max_tokens=args.max_tokens,
                        temperature=args.temperature, max_thinking_tokens=args.max_thinking_tokens, seed=args.seed)
    with agent:
        return run_agent_repl(agent, sys.stdout, sys.stdin, model=args.model, system=args.system)


def _tool_list(values: list[str] | None) -> list[str] | None:
    """`--allowed-tools a b` and `--allowed-tools a,b`."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
