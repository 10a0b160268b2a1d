"""Hermes-style tool calls, as Qwen3 writes them: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`.

Non-streaming rules follow vLLM's `hermes` parser: no `<tool_call>` -> all text is content; otherwise every
`<tool_call>...</tool_call>` block (and a final unterminated one) must hold a JSON object with `name` and
`arguments`, else there are no tool calls and the whole text is content. Content is the text before the
first `<tool_call>`; text after the calls is dropped. `arguments` is `json.dumps(..., ensure_ascii=False)`.

An output cut by max_tokens (`cut=True`) inside its last call reports the calls before it and `cut`: the
unfinished call is neither a tool call (its arguments would not parse) nor content (it is markup). Its body
must still be a valid JSON prefix; one that is not is malformed, as above.

The streaming parser emits OpenAI-shaped pieces whose concatenation equals the non-streaming result for
well-formed output. If the first call's body is not JSON before its name was sent, it falls back to plain
content, as the non-streaming parser does; a call that breaks after its name was streamed cannot be
taken back (the same holds for vLLM). With `whole_calls` (forced tool calls, whose grammar makes every
finished call valid) a call is sent only once its JSON is complete, so a call cut by max_tokens is never
sent and the stream equals the non-streaming result exactly.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field

from qwick.tokenizer.json_stream import ToolCallBodyReader
from qwick.tokenizer.tags import partial_tag_suffix

TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)


def make_tool_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI's `function.arguments`
    id: str = field(default_factory=make_tool_call_id)


@dataclass(frozen=True)
class ToolCallParseResult:
    content: str | None
    tool_calls: list[ToolCall]
    cut: bool = False  # the output ended inside a call, which is left out


@dataclass(frozen=True)
class ToolCallDelta:
    """One entry of an OpenAI `delta.tool_calls` list: id and name come once, then argument fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class ToolStreamDelta:
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


def parse_tool_calls(text: str, cut: bool = False) -> ToolCallParseResult:
    """Split a finished output into content and tool calls; `cut`: max_tokens ended it (see the module docstring)."""
    if TOOL_CALL_START not in text:
        return ToolCallParseResult(text or None, [])
    content = text[:text.index(TOOL_CALL_START)] or None
    calls = []
    for match in _TOOL_CALL_RE.finditer(text):
        open_ended = match.group(1) is None
        body_text = match.group(1)
        if open_ended:  # without the start of a closing tag, which the streaming parser holds back too
            body_text = match.group(2)[:len(match.group(2)) - partial_tag_suffix(match.group(2), TOOL_CALL_END)]
        try:
            body = json.loads(body_text)
        except ValueError:
            if cut and open_ended and _json_prefix(body_text):
                return ToolCallParseResult(content, calls, cut=True)
            return ToolCallParseResult(text, [])
        if not (isinstance(body, dict) and isinstance(body.get("name"), str) and "arguments" in body):
            return ToolCallParseResult(text, [])
        calls.append(ToolCall(body["name"], json.dumps(body["arguments"], ensure_ascii=False)))
    return ToolCallParseResult(content, calls)


def _json_prefix(body: str) -> bool:
    """Whether a call body could still become valid JSON (the streaming parser's test, for agreement)."""
    reader = ToolCallBodyReader()
    reader.feed(body)
    return not reader.error


@dataclass
class _StreamedCall:
    reader: ToolCallBodyReader = field(default_factory=ToolCallBodyReader)
    name_sent: bool = False
    arguments_sent: int = 0


class ToolCallStreamParser:
    """Streaming twin of `parse_tool_calls`: `feed` each text delta, then `finish` once."""

    def __init__(self, whole_calls: bool = False) -> None:
        self.whole_calls = whole_calls  # send a call only once its JSON is complete (see the module docstring)
        self.cut = False  # set by finish(cut=True) when the output ended inside a call
        self._text = ""
        self._content_sent = 0  # chars at the start of text already sent as content
        self._pos = 0  # chars of text consumed by tool-call parsing
        self._calls: list[_StreamedCall] = []
        self._in_call = False  # between a <tool_call> and its </tool_call>
        self._plain = False  # the first call was not JSON: everything is content

    def feed(self, delta: str) -> ToolStreamDelta:
        self._text += delta
        return self._step(final=False)

    def finish(self, cut: bool = False) -> ToolStreamDelta:
        """The last piece; `cut`: max_tokens ended the output (an unfinished last call is then dropped)."""
        return self._step(final=True, cut=cut)

    def _step(self, final: bool, cut: bool = False) -> ToolStreamDelta:
        if self._plain:
            return ToolStreamDelta(self._flush_text())
        content = ""
        if not self._calls:
            start = self._text.find(TOOL_CALL_START)
            if start < 0:
                return ToolStreamDelta(self._flush_text(0 if final else partial_tag_suffix(self._text, TOOL_CALL_START)))
            content, self._content_sent = self._text[:start], start
            self._open_call(start)
        self._read_calls(final)
        first = self._calls[0]
        last = self._calls[-1].reader
        self.cut = final and cut and self._in_call and not last.done and not last.error
        # Before any call is announced, a first body that is not JSON (or never names a function) means the
        # output is plain text after all, exactly as parse_tool_calls decides.
        if not first.name_sent and (first.reader.error or (final and not self.cut)):
            self._plain = True
            return ToolStreamDelta(content + self._flush_text())
        return ToolStreamDelta(content, self._call_deltas())

    def _flush_text(self, keep: int = 0) -> str:
        """Send the unsent text as content, except the last `keep` chars, and forget what was sent."""
        end = len(self._text) - keep
        piece = self._text[self._content_sent:end]
        self._text, self._content_sent = self._text[end:], 0
        return piece

    def _open_call(self, tag_at: int) -> None:
        self._calls.append(_StreamedCall())
        self._pos = tag_at + len(TOOL_CALL_START)
        self._in_call = True

    def _read_calls(self, final: bool) -> None:
        """Feed each call's reader the body text that can no longer turn out to be a closing tag."""
        while True:
            if not self._in_call:
                start = self._text.find(TOOL_CALL_START, self._pos)
                if start < 0:
                    return
                self._open_call(start)
            end = self._text.find(TOOL_CALL_END, self._pos)
            if end < 0:
                held = 0 if final else partial_tag_suffix(self._text, TOOL_CALL_END)
                self._calls[-1].reader.feed(self._text[self._pos:len(self._text) - held])
                self._pos = max(self._pos, len(self._text) - held)
                return
            self._calls[-1].reader.feed(self._text[self._pos:end])
            self._pos = end + len(TOOL_CALL_END)
            self._in_call = False

    def _call_deltas(self) -> list[ToolCallDelta]:
        deltas = []
        for index, call in enumerate(self._calls):
            reader = call.reader
            if not call.name_sent:
                if reader.name is None or (self.whole_calls and not reader.done):
                    break  # calls are announced in order, so a later one waits for this name
                call.name_sent = True
                deltas.append(ToolCallDelta(index, make_tool_call_id(), reader.name, reader.arguments))
            elif len(reader.arguments) > call.arguments_sent:
                deltas.append(ToolCallDelta(index, arguments=reader.arguments[call.arguments_sent:]))
            call.arguments_sent = len(reader.arguments)
        return deltas

