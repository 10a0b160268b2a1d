"""Structured output over HTTP: response_format, vLLM's structured_outputs / guided_* and forced tool calls.

The served model is a tiny random Qwen3 sampling at temperature 1, so every valid answer comes from the
grammar masks; the client is the official `openai` package.
"""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest
from serverkit import MODEL

NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
USER = [{"role": "user", "content": "Describe a city."}]
CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "population": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
        "climate": {"enum": ["cold", "mild", "hot"]},
        "districts": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    },
    "required": ["city", "population", "climate", "districts"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer", "maximum": 999},
                                                                   "b": {"type": "integer", "maximum": 999}},
                                  "required": ["a", "b"], "additionalProperties": False}}}
TOOL_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, ADD)}


def _chat(client, seed: int, **kwargs):
    kwargs.setdefault("extra_body", NO_THINK)
    return client.chat.completions.create(model=MODEL, messages=USER, temperature=1.0, seed=seed,
                                          max_tokens=kwargs.pop("max_tokens", 100), **kwargs)


@pytest.mark.parametrize("seed", range(6))
def test_json_schema_response_format(client, seed):
    response = _chat(client, seed, response_format=RESPONSE_FORMAT)
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), CITY_SCHEMA)


def test_json_schema_streamed(client):
    for seed in range(3):
        stream = _chat(client, seed, response_format=RESPONSE_FORMAT, stream=True)
        content = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        jsonschema.validate(json.loads(content), CITY_SCHEMA)


def test_json_object(client):
    finished = 0
    for seed in range(6):
        choice = _chat(client, seed, response_format={"type": "json_object"}, max_tokens=40).choices[0]
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
            finished += 1
        else:  # any object allows endless strings, which a random model writes; the cut is honest
            assert choice.message.content.startswith("{")
    assert finished >= 1


def test_thinking_on_constrains_only_the_answer(client):
    """Thinking on (the default): reasoning is free, bounded by max_thinking_tokens; content validates."""
    for seed in range(4):
        message = _chat(client, seed, response_format=RESPONSE_FORMAT, max_tokens=160,
                        extra_body={"max_thinking_tokens": 5}).choices[0].message
        jsonschema.validate(json.loads(message.content), CITY_SCHEMA)
        assert message.content.lstrip()[0] == "{"


def test_thinking_on_streamed(client):
    for seed in range(4):
        stream = _chat(client, seed, response_format=RESPONSE_FORMAT, max_tokens=160, stream=True,
                       extra_body={"max_thinking_tokens": 5})
        content = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        jsonschema.validate(json.loads(content), CITY_SCHEMA)


@pytest.mark.parametrize(("extra", "check"), [
    ({"guided_regex": r"[A-Z]{2}-[0-9]{3}"}, lambda text: re.fullmatch(r"[A-Z]{2}-[0-9]{3}", text)),
    ({"guided_choice": ["red", "green", "blue"]}, lambda text: text in ("red", "green", "blue")),
    ({"guided_grammar": 'root ::= "(" [a-c] [a-c]? [a-c]? ")"'}, lambda text: re.fullmatch(r"\([a-c]{1,3}\)", text)),
    ({"guided_json": CITY_SCHEMA}, lambda text: jsonschema.validate(json.loads(text), CITY_SCHEMA) is None),
    ({"structured_outputs": {"choice": ["yes", "no"]}}, lambda text: text in ("yes", "no")),
    ({"structured_outputs": {"regex": r"[0-9]{4}"}}, lambda text: re.fullmatch(r"[0-9]{4}", text)),
])
def test_vllm_extras_in_completions_and_chat(client, extra, check):
    for seed in range(3):
        completion = client.completions.create(model=MODEL, prompt="Answer:", temperature=1.0, seed=seed,
                                               max_tokens=100, extra_body=extra)
        assert completion.choices[0].finish_reason == "stop"
        assert check(completion.choices[0].text), completion.choices[0].text
        message = _chat(client, seed, extra_body={**NO_THINK, **extra}).choices[0].message
        assert check(message.content), message.content


def _check_calls(message, allowed: set[str]) -> None:
    assert message.tool_calls, message
    for call in message.tool_calls:
        assert call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), TOOL_SCHEMAS[call.function.name])


@pytest.mark.parametrize("seed", range(4))
def test_tool_choice_required(client, seed):
    choice = _chat(client, seed, tools=[WEATHER, ADD], tool_choice="required", max_tokens=120).choices[0]
    assert choice.finish_reason == "tool_calls"
    _check_calls(choice.message, {"get_weather", "add"})


def test_tool_choice_required_one_call_without_parallel(client):
    for seed in range(3):
        choice = _chat(client, seed, tools=[WEATHER, ADD], tool_choice="required", parallel_tool_calls=False,
                       max_tokens=120).choices[0]
        assert len(choice.message.tool_calls) == 1
        _check_calls(choice.message, {"get_weather", "add"})


def test_named_tool_choice(client):
    for seed in range(3):
        choice = _chat(client, seed, tools=[WEATHER, ADD], max_tokens=120,
                       tool_choice={"type": "function", "function": {"name": "add"}}).choices[0]
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
        _check_calls(choice.message, {"add"})


def test_tool_choice_required_streamed(client):
    for seed in range(3):
        stream = _chat(client, seed, tools=[WEATHER, ADD], tool_choice="required", max_tokens=120, stream=True)
        names, arguments, finish = {}, {}, None
        for chunk in stream:
            if not chunk.choices:
                continue
            for call in chunk.choices[0].delta.tool_calls or []:
                if call.function.name:
                    names[call.index] = call.function.name
                arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
            finish = chunk.choices[0].finish_reason or finish
        assert finish == "tool_calls" and names
        for index, name in names.items():
            jsonschema.validate(json.loads(arguments[index]), TOOL_SCHEMAS[name])


def test_constrained_and_free_requests_together(server):
    """Concurrent requests share batches; each constrained one validates, free ones are unaffected."""
    client = server.async_client()

    async def one(seed: int, constrained: bool):
        extra = {**NO_THINK, **({"guided_json": CITY_SCHEMA} if constrained else {})}
        return await client.chat.completions.create(model=MODEL, messages=USER, temperature=1.0, seed=seed,
                                                    max_tokens=100, extra_body=extra)

    async def run():
        return await asyncio.gather(*(one(seed, seed % 2 == 0) for seed in range(8)))

    responses = asyncio.run(run())
    for seed, response in enumerate(responses):
        content = response.choices[0].message.content
        if seed % 2 == 0:
            jsonschema.validate(json.loads(content), CITY_SCHEMA)
        else:
            assert response.choices[0].finish_reason == "length"  # free text from a random model runs on


def _assembled(stream) -> tuple[str, list[tuple[str, str]], str | None]:
    content, calls, finish = "", {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            if call.function.name:
                calls[call.index] = [call.function.name, ""]
            calls[call.index][1] += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return content, [tuple(c) for c in calls.values()], finish


@pytest.mark.parametrize("max_tokens", [10, 40, 70])  # cut in the 1st call, in the 2nd, in the 3rd (tiny model)
def test_forced_tool_calls_cut_by_max_tokens_agree_streamed_and_not(client, max_tokens):
    """Finished calls are tool_calls (each valid), an unfinished one is only "length", never markup in content.
    ignore_eos keeps the grammar from ending after one call, so later calls get cut too."""
    for seed in range(2):
        kwargs = dict(tools=[WEATHER, ADD], tool_choice="required", max_tokens=max_tokens,
                      extra_body={**NO_THINK, "ignore_eos": True})
        whole = _chat(client, seed, **kwargs).choices[0]
        content, calls, finish = _assembled(_chat(client, seed, stream=True, **kwargs))
        expected = [(c.function.name, c.function.arguments) for c in whole.message.tool_calls or []]
        assert (calls, finish) == (expected, whole.finish_reason)
        assert "<tool_call>" not in content + (whole.message.content or "")
        for name, arguments in calls:
            jsonschema.validate(json.loads(arguments), TOOL_SCHEMAS[name])
        assert whole.finish_reason == "length" or (whole.finish_reason == "tool_calls" and calls)
