"""Training data files: read JSONL, validate every line before training starts, and map rows to conversations.

Row formats (one JSON object per line, mixable in one file):
- chat: `{"messages": [{"role", "content", "reasoning_content"?, "tool_calls"?}, ...], "tools"?: [...]}`
- prompt/completion: `{"prompt": str, "completion": str}` (raw text), or both lists of messages (a chat)
- gate: `{"text": str, "label": str}`, mapped through a gate template (a prompt with `{text}`) to a chat
Every problem is reported as `file:line: message` (all of them, up to MAX_ISSUES) in one DataError.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
# Literal control tokens inside message text would be tokenized as real turn boundaries and corrupt the mask.
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
DEFAULT_GATE_TEMPLATE = "Classify the following text. Answer with the label only.\n\nText: {text}"
MAX_ISSUES = 20


@dataclass(frozen=True)
class DataIssue:
    path: str
    line: int | None  # 1-based; None for a problem with the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


class DataError(ValueError):
    """One or more bad rows; `issues` holds each `file:line: message`."""

    def __init__(self, issues: list[DataIssue], total: int | None = None) -> None:
        self.issues = issues
        self.total = total or len(issues)  # all problems found; `issues` holds the first MAX_ISSUES
        more = self.total - len(issues)
        super().__init__("\n".join(map(str, issues)) + (f"\n... and {more} more problems" if more > 0 else ""))


@dataclass
class ChatRow:
    """A conversation; when it ends with an assistant message, that is the answer to learn."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    line: int = 0
    complete: bool = True  # False: the last answer was cut off, so its end-of-turn token is not trained


@dataclass
class TextRow:
    """Raw text: `prompt` is context, `completion` (None: still to be generated) is learned, then EOS."""

    prompt: str
    completion: str | None
    line: int = 0
    complete: bool = True


Row = ChatRow | TextRow


class RowError(Exception):
    """One row's problem (becomes a DataIssue with the line number)."""


def gate_messages(text: str, label: str | None, template: str = DEFAULT_GATE_TEMPLATE) -> list[dict[str, str]]:
    """A gate example as a chat: the template with `{text}` filled is the user turn, the label the answer."""
    if "{text}" not in template:
        raise ValueError(f"a gate template must contain {{text}} where the text goes, got {template!r}")
    messages = [{"role": "user", "content": template.replace("{text}", text)}]
    return messages if label is None else [*messages, {"role": "assistant", "content": label}]


def read_jsonl(path: Path, parse: Callable[[Any, int], Row | str]) -> list[Any]:
    """Parse every line with `parse(obj, line)`; raise one DataError listing every bad line."""
    name = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {name} does not exist")
    lines = path.read_text(encoding="utf-8").split("\n")
    while lines and not lines[-1].strip():  # trailing blank lines are the end of the file, not rows
        lines.pop()
    if not lines:
        raise DataError([DataIssue(name, None, "the file is empty: expected one JSON object per line")])
    rows, issues, total = [], [], 0
    for number, text in enumerate(lines, start=1):
        try:
            if not text.strip():
                raise RowError("empty line: JSONL needs one JSON object per line")
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RowError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise RowError(f"expected a JSON object, got {type(obj).__name__}")
            rows.append(parse(obj, number))
        except RowError as exc:
            total += 1
            if len(issues) < MAX_ISSUES:
                issues.append(DataIssue(name, number, str(exc)))
    if issues:
        raise DataError(issues, total)
    return rows


def load_rows(path: str | Path, *, gate_template: str = DEFAULT_GATE_TEMPLATE,
              require_answer: bool = True) -> list[Row]:
    """Validated rows of a fine-tuning (or, with require_answer=False, a distillation prompt) file."""
    gate_messages("", None, gate_template)  # validates the template once, before any line
    return read_jsonl(Path(path), lambda obj, line: parse_row(obj, line, gate_template, require_answer))


def parse_row(obj: dict[str, Any], line: int, gate_template: str, require_answer: bool) -> Row:
    if "messages" in obj:
        return _chat_row(obj["messages"], obj.get("tools"), line, require_answer)
    if "prompt" in obj or "completion" in obj:
        return _prompt_completion_row(obj, line, require_answer)
    if "label" in obj or ("text" in obj and not require_answer):
        text, label = _string(obj, "text"), obj.get("label")
        if label is not None or require_answer:
            label = _string(obj, "label")
        return ChatRow(gate_messages(text, label, gate_template), None, line)
    if "text" in obj:
        raise RowError('a {"text"} row without "label" is pretraining text: use `qwick pretrain`, or add a "label"')
    keys = ", ".join(sorted(obj)) or "none"
    raise RowError(f'unknown row format (keys: {keys}); expected {{"messages": [...]}}, '
               '{"prompt": ..., "completion": ...} or {"text": ..., "label": ...}')


def _string(obj: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    if key not in obj:
        raise RowError(f'missing field "{key}"')
    value = obj[key]
    if not isinstance(value, str):
        raise RowError(f'"{key}" must be a string, got {type(value).__name__}')
    if not value.strip() and not allow_empty:
        raise RowError(f'"{key}" is empty')
    _no_control_tokens(value, f'"{key}"')
    return value


def _prompt_completion_row(obj: dict[str, Any], line: int, require_answer: bool) -> Row:
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if isinstance(prompt, list):  # conversational prompt/completion, as TRL accepts: a chat split in two
        if completion is not None and not isinstance(completion, list):
            raise RowError('"prompt" is a list of messages, so "completion" must be one too')
        answer = completion or []
        if any(isinstance(m, dict) and m.get("role") != "assistant" for m in answer):
            raise RowError('every message of "completion" must have role "assistant"')
        return _chat_row(prompt + answer, obj.get("tools"), line, require_answer or bool(answer))
    prompt = _string(obj, "prompt", allow_empty=True)
    if completion is None and not require_answer:
        return TextRow(prompt, None, line)
    return TextRow(prompt, _string(obj, "completion"), line)


def _chat_row(messages: Any, tools: Any, line: int, require_answer: bool) -> ChatRow:
    if not isinstance(messages, list):
        raise RowError(f'"messages" must be a list of messages, got {type(messages).__name__}')
    if not messages:
        raise RowError('"messages" is empty')
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise RowError('"tools" must be a list of JSON-schema objects like {"type": "function", "function": {...}}')
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]")
    roles = [m["role"] for m in messages]
    if require_answer and roles[-1] != "assistant":
        raise RowError(f'the last message has role "{roles[-1]}": a training conversation must end with the '
                   "assistant turn it teaches")
    if roles[-1] == "system":
        raise RowError("the conversation ends with a system message: there is nothing to answer")
    return ChatRow(messages, tools, line)


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise RowError(f'{where} must be an object with "role" and "content", got {type(message).__name__}')
    role = message.get("role")
    if role is None:
        raise RowError(f'{where} has no "role"')
    if role not in ROLES:
        raise RowError(f'{where} has role {role!r}; expected one of {", ".join(ROLES)}')
    content = message.get("content")
    if role != "assistant" and content is None:
        raise RowError(f'{where} ({role}) has no "content"')
    if content is not None and not isinstance(content, str):
        raise RowError(f'{where}.content must be a string, got {type(content).__name__} '
                   "(lists of content parts are not supported)")
    _no_control_tokens(content or "", f"{where}.content")
    reasoning = message.get("reasoning_content")
    if reasoning is not None:
        if role != "assistant":
            raise RowError(f"{where}: reasoning_content is only valid on assistant messages")
        if not isinstance(reasoning, str):
            raise RowError(f"{where}.reasoning_content must be a string, got {type(reasoning).__name__}")
        _no_control_tokens(reasoning, f"{where}.reasoning_content")
    calls = message.get("tool_calls")
    if calls is not None:
        if role != "assistant":
            raise RowError(f"{where}: tool_calls are only valid on assistant messages")
        _check_tool_calls(calls, where)
    if role == "assistant" and not (content or "").strip() and not calls and not (reasoning or "").strip():
        raise RowError(f"{where} (assistant) is empty: nothing to train on")


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list) or not calls:
        raise RowError(f"{where}.tool_calls must be a non-empty list")
    for i, call in enumerate(calls):
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise RowError(f'{where}.tool_calls[{i}] needs {{"function": {{"name": str, "arguments": ...}}}}')
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                raise RowError(f"{where}.tool_calls[{i}].arguments is a string but not valid JSON") from None
        if not isinstance(arguments, dict):
            raise RowError(f"{where}.tool_calls[{i}].arguments must be a JSON object")


def _no_control_tokens(text: str, where: str) -> None:
    for token in CONTROL_TOKENS:
        if token in text:
            raise RowError(f"{where} contains the control token {token}, which would break the chat's turn structure")
