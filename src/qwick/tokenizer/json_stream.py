"""Incremental reading of one hermes tool-call body, `{"name": ..., "arguments": ...}`, as it streams in.

The OpenAI `arguments` string of a finished call is `json.dumps(arguments, ensure_ascii=False)`. To stream
pieces that join to exactly that string, the `arguments` value is re-serialised token by token in
json.dumps' canonical form (", " and ": " separators, json.dumps escapes, numbers as Python prints them)
while the model writes it in whatever spacing and escaping it likes. Acceptance follows `json.loads`.
"""

from __future__ import annotations

import json
from collections.abc import Generator

WHITESPACE = " \t\n\r"  # JSON whitespace, as json.loads skips it
SCALAR_CHARS = frozenset("0123456789+-.eEtruefalsnNaIiy")  # numbers, true/false/null, NaN/Infinity
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

_Wait = Generator[None, None, str]


class MalformedJSON(ValueError):
    """The body can no longer become valid JSON."""


class ToolCallBodyReader:
    """Feed body text as it arrives; read `name` (once complete) and `arguments` (canonical text so far)."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.arguments = ""
        self.done = False  # the top-level object is closed
        self.error = False  # the body is not valid JSON
        self._buf = ""
        self._pos = 0
        self._out: list[str] | None = None  # where canonical text goes while inside `arguments`
        self._args: list[str] = []
        self._parser = self._body()
        next(self._parser)

    def feed(self, text: str) -> None:
        if self.done or self.error:
            return
        self._buf += text
        try:
            self._parser.send(None)
        except StopIteration:
            self.done = True
        except MalformedJSON:
            self.error = True
        self.arguments = "".join(self._args)

    # Each parser step below is a generator that yields while it needs more text.

    def _peek(self) -> _Wait:
        while self._pos >= len(self._buf):
            yield
        return self._buf[self._pos]

    def _take(self) -> _Wait:
        char = yield from self._peek()
        self._pos += 1
        return char

    def _expect(self, char: str) -> _Wait:
        if (got := (yield from self._take())) != char:
            raise MalformedJSON(f"expected {char!r}, got {got!r}")
        self._write(char)
        return char

    def _skip_ws(self) -> _Wait:
        while (yield from self._peek()) in WHITESPACE:
            self._pos += 1
        return ""

    def _write(self, text: str) -> None:
        if self._out is not None:
            self._out.append(text)

    def _body(self) -> Generator[None, None, None]:
        yield  # primed by __init__, before any text
        yield from self._skip_ws()
        yield from self._expect("{")
        yield from self._skip_ws()
        if (yield from self._peek()) == "}":
            self._pos += 1
            return
        while True:
            key = yield from self._string()
            yield from self._skip_ws()
            yield from self._expect(":")
            yield from self._skip_ws()
            if key == "arguments" and not self._args:  # json.loads would keep a repeated key's last value; models don't repeat it
                self._out = self._args
                yield from self._value()
                self._out = None
            elif key == "name" and (yield from self._peek()) == '"':
                self.name = yield from self._string()
            else:
                yield from self._value()
            yield from self._skip_ws()
            char = yield from self._take()
            if char == "}":
                return
            if char != ",":
                raise MalformedJSON(f"expected ',' or '}}' in the tool call object, got {char!r}")
            yield from self._skip_ws()

    def _value(self) -> _Wait:
        char = yield from self._peek()
        if char == '"':
            yield from self._string()
        elif char in "{[":
            yield from self._container(char)
        else:
            yield from self._scalar()
        return ""

    def _container(self, opener: str) -> _Wait:
        closer = "}" if opener == "{" else "]"
        yield from self._expect(opener)
        yield from self._skip_ws()
        if (yield from self._peek()) == closer:
            yield from self._expect(closer)
            return ""
        while True:
            if opener == "{":
                if (yield from self._peek()) != '"':
                    raise MalformedJSON("object keys must be strings")
                yield from self._string()
                yield from self._skip_ws()
                yield from self._expect(":")
                self._write(" ")
                yield from self._skip_ws()
            yield from self._value()
            yield from self._skip_ws()
            char = yield from self._take()
            if char == closer:
                self._write(closer)
                return ""
            if char != ",":
                raise MalformedJSON(f"expected ',' or {closer!r}, got {char!r}")
            self._write(", ")
            yield from self._skip_ws()

    def _scalar(self) -> _Wait:
        start = self._pos
        while (yield from self._peek()) in SCALAR_CHARS:
            self._pos += 1
        token = self._buf[start:self._pos]
        try:
            value = json.loads(token)
        except ValueError as e:
            raise MalformedJSON(f"bad JSON value {token!r}") from e
        self._write(json.dumps(value))
        return token

    def _string(self) -> _Wait:
        """Read a string, writing each finished character in json.dumps' escaping as soon as it is known."""
        yield from self._expect('"')
        chars: list[str] = []
        while (char := (yield from self._take())) != '"':
            if char == "\\":
                char = yield from self._escape()
            elif char < " ":
                raise MalformedJSON("control character in a JSON string")  # json.loads is strict
            chars.append(char)
            self._write(json.dumps(char, ensure_ascii=False)[1:-1])
        self._write('"')
        return "".join(chars)

    def _escape(self) -> _Wait:
        kind = yield from self._take()
        if kind != "u":
            if kind not in ESCAPES:
                raise MalformedJSON(f"invalid escape \\{kind}")
            return ESCAPES[kind]
        code = yield from self._hex4()
        if 0xD800 <= code <= 0xDBFF and (yield from self._peek()) == "\\":
            # A high surrogate pairs with a following \\uDC00-\\uDFFF escape, as json.loads combines them.
            mark = self._pos
            self._pos += 1
            if (yield from self._take()) == "u":
                low = yield from self._hex4()
                if 0xDC00 <= low <= 0xDFFF:
                    return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
            self._pos = mark
        return chr(code)

    def _hex4(self) -> Generator[None, None, int]:
        digits = ""
        for _ in range(4):
            digits += yield from self._take()
        if not all(c in HEX_DIGITS for c in digits):  # int(..., 16) would also take signs, spaces, "_"
            raise MalformedJSON(f"invalid \\u escape {digits!r}")
        return int(digits, 16)
