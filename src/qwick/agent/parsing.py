"""Reading tool calls from a model's answer. Forced steps cannot go wrong (the grammar wrote them); free steps
go through the strict hermes parser (`qwick.tokenizer.tool_calls`) and, where it gives up, a tolerant one
that repairs what small models are known to write: two calls in one block (`}{`, `}\\n{`), the
`{"name", "arguments"}` wrapper copied into the arguments, arguments as a JSON string, `parameters` for
`arguments`, and a call printed as bare JSON without the `<tool_call>` tags."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from qwick.tokenizer.tool_calls import TOOL_CALL_START, make_tool_call_id, parse_tool_calls

_BLOCK_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ParsedCall:
    """One call as the model wrote it; `problem` says why it cannot be run (then the model is told)."""

    name: str
    arguments: Any
    id: str = field(default_factory=make_tool_call_id)
    repaired: str | None = None  # what the tolerant parser fixed, if anything
    problem: str | None = None

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


def parse_calls(text: str, known: Collection[str] = (), tolerant: bool = True,
                cut: bool = False) -> tuple[str | None, list[ParsedCall]]:
    """The answer's content (text before the calls, None if empty) and its calls. `known`: the tool names,
    for recognising a bare JSON call. Without `tolerant` only the strict hermes format counts. `cut`: max_tokens
    ended the text, so an unfinished last call is left out and the finished ones count."""
    strict = parse_tool_calls(text, cut=cut)
    if strict.tool_calls:
        calls = [_unwrap(c.name, json.loads(c.arguments), None) for c in strict.tool_calls]
        return strict.content.strip() if strict.content and strict.content.strip() else None, calls
    if not tolerant:
        return text.strip() or None, []
    if TOOL_CALL_START in text:
        content = text[:text.index(TOOL_CALL_START)].strip() or None
        calls = []
        for block in _BLOCK_RE.findall(text):
            calls.extend(_block_calls(block))
        return content, calls
    bare = _objects(text.strip())
    if bare and all(isinstance(o, dict) and o.get("name") in known for o in bare[0]) and not bare[1].strip():
        return None, [_call(o, "a call written as plain JSON without <tool_call> tags") for o in bare[0]]
    return text.strip() or None, []


def _block_calls(block: str) -> list[ParsedCall]:
    objects, rest = _objects(block.strip())
    if not objects or rest.strip():
        shown = block.strip()[:200]
        return [ParsedCall("?", None, problem=f"the tool call is not valid JSON: {shown!r}; write "
                                             '{"name": ..., "arguments": {...}} inside <tool_call> tags')]
    note = "several JSON objects in one <tool_call> block" if len(objects) > 1 else None
    return [_call(o, note) for o in objects]


def _objects(text: str) -> tuple[list[Any], str]:
    """The JSON values at the start of `text` one after another (`}{` or whitespace between), and the rest."""
    values, pos = [], 0
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos == len(text):
            break
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        values.append(value)
    return values, text[pos:]


def _call(obj: Any, note: str | None) -> ParsedCall:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return ParsedCall("?", None, problem=f"a tool call must be a JSON object with \"name\" and \"arguments\", "
                                             f"got {json.dumps(obj, ensure_ascii=False)[:200]}")
    if "arguments" in obj:
        arguments = obj["arguments"]
    elif "parameters" in obj:
        arguments, note = obj["parameters"], note or "\"parameters\" used for \"arguments\""
    else:
        arguments = {}
    return _unwrap(obj["name"], arguments, note)


def _unwrap(name: str, arguments: Any, note: str | None) -> ParsedCall:
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            arguments, note = decoded, note or "arguments given as a JSON string"
    if (isinstance(arguments, dict) and arguments.get("name") == name
            and set(arguments) in ({"name", "arguments"}, {"name", "parameters"})):
        inner = arguments.get("arguments", arguments.get("parameters"))
        arguments, note = inner, note or "the {\"name\", \"arguments\"} wrapper copied into the arguments"
    return ParsedCall(name, arguments, repaired=note)
