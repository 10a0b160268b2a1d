"""The streaming tool-call body reader re-serialises `arguments` exactly as json.dumps would, prefix by prefix."""

from __future__ import annotations

import json
import random

import pytest

from qwick.tokenizer.json_stream import ToolCallBodyReader

STRING_CHARS = ['a', 'Z', ' ', '"', '\\', '/', '\n', '\t', '\x01', '\x7f', 'é', '中', '😀', '\u2028', '\ud800']


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.choice(["str", "int", "float", "bool", "null", "list", "dict"] if depth < 3 else ["str", "int"])
    if kind == "str":
        return "".join(rng.choice(STRING_CHARS) for _ in range(rng.randint(0, 6)))
    if kind == "int":
        return rng.choice([0, -7, 42, 10**20])
    if kind == "float":
        return rng.choice([0.5, -2.25e-8, 1e300, 3.0])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}{rng.choice(STRING_CHARS)}": random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def messy_json(rng: random.Random, value) -> str:
    """Valid JSON for `value` in a style a model might write: odd spacing, \\u escapes, 1E2-style numbers."""
    ws = lambda: rng.choice(["", " ", "\n  ", "\t"])  # noqa: E731
    if isinstance(value, dict):
        items = [f"{ws()}{messy_json(rng, k)}{ws()}:{ws()}{messy_json(rng, v)}{ws()}" for k, v in value.items()]
        return "{" + ",".join(items) + ws() + "}"
    if isinstance(value, list):
        return "[" + ",".join(ws() + messy_json(rng, v) + ws() for v in value) + ws() + "]"
    if isinstance(value, float) and rng.random() < 0.5:
        return f"{value:E}" if value == float(f"{value:E}") else repr(value)
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


def read(text: str, rng: random.Random) -> tuple[ToolCallBodyReader, list[str]]:
    reader, seen, i = ToolCallBodyReader(), [], 0
    while i < len(text):
        step = rng.randint(1, 5)
        reader.feed(text[i:i + step])
        seen.append(reader.arguments)
        i += step
    return reader, seen


@pytest.mark.parametrize("seed", range(6))
def test_arguments_equal_json_dumps_and_only_ever_grow(seed):
    rng = random.Random(seed)
    for _ in range(60):
        arguments = random_value(rng)
        body = '{"name": "f", "arguments": ' + messy_json(rng, arguments) + "}"
        reader, seen = read(body, rng)
        expected = json.dumps(arguments, ensure_ascii=False)
        assert (reader.name, reader.arguments, reader.done, reader.error) == ("f", expected, True, False), body
        assert all(expected.startswith(prefix) for prefix in seen)


def test_a_number_is_not_sent_before_it_ends():
    reader = ToolCallBodyReader()
    reader.feed('{"name": "f", "arguments": {"n": 12')
    assert reader.arguments == '{"n": '
    reader.feed("5}}")
    assert reader.arguments == '{"n": 125}'


def test_a_surrogate_pair_waits_for_its_second_half():
    reader = ToolCallBodyReader()
    reader.feed('{"name": "f", "arguments": "\\ud83d')
    assert reader.arguments == '"'
    reader.feed('\\ude00"}')
    assert reader.arguments == '"😀"'


@pytest.mark.parametrize("body", [
    '{"name": "f", "arguments": {"a": 1,}}',
    "{'name': 'f', 'arguments': {}}",
    '{"name": "f", "arguments": {"a": "raw\nnewline"}}',
    '{"name": "f", "arguments": {"a": "\\x"}}',
    '{"name": "f", "arguments": {"a": "\\u12g4"}}',
    '{"name": "f", "arguments": {"a": 01}}',
    '{"name": "f" "arguments": {}}',
])
def test_invalid_json_is_reported(body):
    reader = ToolCallBodyReader()
    reader.feed(body)
    assert reader.error
    with pytest.raises(ValueError):
        json.loads(body)
