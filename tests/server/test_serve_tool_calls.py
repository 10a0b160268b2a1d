"""Hermes tool calls: parsed into OpenAI `tool_calls`, and streamed as OpenAI-shaped deltas.

A tiny random model never calls a tool, so this module serves a scripted EngineClient (scripted.py) that
replays given model output, token by token (or character by character) exactly as the engine streams it.
The end-to-end path with tools against the real engine is in test_serve_chat.py.
"""

from __future__ import annotations

import json

import pytest
from scripted import scripted_server
from serverkit import MODEL

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
SECOND = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "Europe/Paris"}}\n</tool_call>'
SCRIPTS = {
    "one call": "<think>\nThe user wants weather.\n</think>\n\n" + CALL,
    "two calls": "<think>\nTwo tools.\n</think>\n\n" + CALL + "\n" + SECOND,
    "text then call": "<think>\nok\n</think>\n\nLet me check." + CALL,
    "malformed": '<think>\nhm\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>',
    "not json": '<think>\n\n</think>\n\n<tool_call>\nget_weather(city="Paris")\n</tool_call>',
    "plain answer": "<think>\nsimple\n</think>\n\nIt is sunny.",
    "truncated second": "<think>\nok\n</think>\n\n" + CALL + "\n" + SECOND[:40],  # max_tokens ended it
    "truncated first": "<think>\nok\n</think>\n\n" + CALL[:30],
    "unicode args": '<think>\n\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich 🌧"}}\n</tool_call>',
}


@pytest.fixture(scope="module", params=["by_token", "by_char"])
def scripted(request, tokenizer_dir):
    with scripted_server(tokenizer_dir, SCRIPTS, request.param == "by_char") as running:
        yield running


def ask(key: str) -> list[dict]:
    return [{"role": "user", "content": f"Please do: {key}"}]


def test_a_tool_call_is_parsed_with_an_id_and_finish_reason(scripted):
    reply = scripted.client().chat.completions.create(model=MODEL, messages=ask("one call"), tools=TOOLS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.model_extra["reasoning_content"] == "The user wants weather."
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}


def test_several_calls_and_leading_text(scripted):
    client = scripted.client()
    two = client.chat.completions.create(model=MODEL, messages=ask("two calls"), tools=TOOLS).choices[0].message
    assert [c.function.name for c in two.tool_calls] == ["get_weather", "get_time"]
    assert len({c.id for c in two.tool_calls}) == 2
    text = client.chat.completions.create(model=MODEL, messages=ask("text then call"), tools=TOOLS).choices[0]
    assert text.message.content == "Let me check." and text.finish_reason == "tool_calls"


@pytest.mark.parametrize("key", ["malformed", "not json"])
def test_malformed_tool_json_comes_back_as_content(scripted, key):
    choice = scripted.client().chat.completions.create(model=MODEL, messages=ask(key), tools=TOOLS).choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content == SCRIPTS[key].split("</think>\n\n")[1]


def test_a_call_whose_json_breaks_after_its_name_streams_as_far_as_it_went(scripted):
    """A streamed name cannot be taken back (vLLM behaves the same): the call keeps its valid prefix."""
    chunks = list(scripted.client().chat.completions.create(model=MODEL, messages=ask("malformed"), tools=TOOLS,
                                                            stream=True))
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_weather"
    assert "".join(c.function.arguments for c in calls) == '{"city": '
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_without_tools_or_with_tool_choice_none_nothing_is_parsed(scripted):
    client = scripted.client()
    for extra in ({}, {"tools": TOOLS, "tool_choice": "none"}):
        choice = client.chat.completions.create(model=MODEL, messages=ask("one call"), **extra).choices[0]
        assert choice.finish_reason == "stop" and choice.message.content == CALL
        assert "<tools>" not in scripted.engine.prompts[-1]
    client.chat.completions.create(model=MODEL, messages=ask("one call"), tools=TOOLS)
    assert "<tools>" in scripted.engine.prompts[-1]


@pytest.mark.parametrize("key", [key for key in SCRIPTS if key != "malformed" and not key.startswith("truncated")])
def test_streamed_deltas_assemble_to_the_non_streamed_message(scripted, key):
    client = scripted.client()
    whole = client.chat.completions.create(model=MODEL, messages=ask(key), tools=TOOLS).choices[0]
    chunks = list(client.chat.completions.create(model=MODEL, messages=ask(key), tools=TOOLS, stream=True))
    content, reasoning, calls = "", "", {}
    for chunk in chunks:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        for call in delta.tool_calls or []:
            if call.index not in calls:  # first delta of a call: id, type, name, empty arguments
                assert call.id and call.type == "function" and call.function.name
                assert call.function.arguments == ""
                calls[call.index] = {"id": call.id, "name": call.function.name, "arguments": ""}
            else:  # later deltas: index and an argument fragment only
                assert call.id is None and call.type is None and call.function.name is None
                calls[call.index]["arguments"] += call.function.arguments
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason
    assert content == (whole.message.content or "")
    assert reasoning == (whole.message.model_extra.get("reasoning_content") or "")
    expected = [(c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls or []]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == expected


def test_the_sdk_stream_helper_accumulates_tool_calls(scripted):
    with scripted.client().chat.completions.stream(model=MODEL, messages=ask("two calls"), tools=TOOLS) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"zone": "Europe/Paris"})]


FUNCTIONS = [tool["function"] for tool in TOOLS]


def test_legacy_functions_act_as_tools(scripted):
    client = scripted.client()
    for function_call in (None, "auto", {"name": "get_weather"}):
        extra = {} if function_call is None else {"function_call": function_call}
        choice = client.chat.completions.create(model=MODEL, messages=ask("one call"), functions=FUNCTIONS,
                                                **extra).choices[0]
        assert "<tools>" in scripted.engine.prompts[-1] and '"get_weather"' in scripted.engine.prompts[-1]
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_weather"
    none = client.chat.completions.create(model=MODEL, messages=ask("one call"), functions=FUNCTIONS,
                                          function_call="none").choices[0]
    assert none.message.content == CALL and "<tools>" not in scripted.engine.prompts[-1]


def test_legacy_function_messages_render_as_a_tool_call_and_its_result(scripted):
    history = [*ask("plain answer"),
               {"role": "assistant", "content": None,
                "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
               {"role": "function", "name": "get_weather", "content": "18 degrees, sunny"}]
    reply = scripted.client().chat.completions.create(model=MODEL, messages=history, functions=FUNCTIONS)
    assert reply.choices[0].message.content == "It is sunny."
    prompt = scripted.engine.prompts[-1]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n18 degrees, sunny\n</tool_response>" in prompt


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_a_call_cut_by_max_tokens_is_left_out_and_the_finished_ones_kept(scripted, tool_choice):
    client = scripted.client()
    for key, names in (("truncated second", ["get_weather"]), ("truncated first", [])):
        choice = client.chat.completions.create(model=MODEL, messages=ask(key), tools=TOOLS,
                                                tool_choice=tool_choice).choices[0]
        assert choice.finish_reason == "length" and choice.message.content is None
        assert [c.function.name for c in choice.message.tool_calls or []] == names
        for call in choice.message.tool_calls or []:
            assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}


def test_forced_calls_cut_by_max_tokens_stream_exactly_the_finished_calls(scripted):
    """tool_choice "required": calls are sent whole, so a cut call is never started in the stream either."""
    client = scripted.client()
    for key in ("truncated second", "truncated first"):
        chunks = list(client.chat.completions.create(model=MODEL, messages=ask(key), tools=TOOLS,
                                                     tool_choice="required", stream=True))
        calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
        names = [call.function.name for call in calls if call.function.name]
        assert names == (["get_weather"] if key == "truncated second" else [])
        arguments = "".join(call.function.arguments or "" for call in calls)
        assert (json.loads(arguments) if names else arguments) == ({"city": "Paris", "unit": "celsius"} if names else "")
        assert chunks[-1].choices[0].finish_reason == "length"
        assert "<tool_call>" not in "".join(c.choices[0].delta.content or "" for c in chunks)
