"""POST /v1/responses through the official `openai` client: the tiny random model end to end (plain, streamed,
forced function calls and their round trip, json_schema output, greedy text equal to chat), and a scripted
engine for what a random model never writes (reasoning, function calls)."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from scripted import scripted_server
from serverkit import MODEL, TIMEOUT

PARAMS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                           "unit": {"enum": ["celsius", "fahrenheit"]}},
          "required": ["city", "unit"], "additionalProperties": False}
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather", "parameters": PARAMS}
CHAT_WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                                 "parameters": PARAMS}}
NO_THINK = {"effort": "none"}


# ------------------------------------------------------------------------------------ the tiny model


def test_a_response_has_openai_shape_and_exact_usage(client, tokenizer):
    response = client.responses.create(model=MODEL, input="Hi there", max_output_tokens=6, temperature=0,
                                       reasoning=NO_THINK)
    assert response.id.startswith("resp_") and response.object == "response" and response.model == MODEL
    assert response.status in ("completed", "incomplete") and response.store is False
    assert [item.type for item in response.output] in (["message"], [])
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}], add_generation_prompt=True,
                                           enable_thinking=False)
    assert response.usage.input_tokens == len(tokenizer.encode(prompt))
    assert 1 <= response.usage.output_tokens <= 6
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("effort", ["none", None])
def test_greedy_text_equals_chat_completions_for_the_same_conversation(client, effort):
    items = [{"role": "user", "content": "Name a colour"},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Blue."}]},
             {"role": "user", "content": [{"type": "input_text", "text": "Another"}]}]
    extra = {"reasoning": {"effort": effort}} if effort else {}
    response = client.responses.create(model=MODEL, instructions="Be terse.", input=items, max_output_tokens=10,
                                       temperature=0, **extra)
    chat = client.chat.completions.create(
        model=MODEL, max_tokens=10, temperature=0, reasoning_effort=effort or openai.omit,
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a colour"},
                  {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another"}],
    ).choices[0].message
    assert response.output_text == (chat.content or "")
    reasoning = [part.text for item in response.output if item.type == "reasoning" for part in item.content]
    assert ("".join(reasoning) or None) == chat.model_extra.get("reasoning_content")


def test_the_stream_helper_assembles_the_same_response(client):
    kwargs = {"model": MODEL, "input": "Hi", "max_output_tokens": 8, "temperature": 0, "reasoning": NO_THINK}
    whole = client.responses.create(**kwargs)
    with client.responses.stream(**kwargs) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response() if whole.status == "completed" else None
    assert "".join(deltas) == whole.output_text
    if final is not None:  # the helper's final response is response.completed's; a cut one ends incomplete
        assert final.output_text == whole.output_text and final.usage.output_tokens == whole.usage.output_tokens


def test_the_raw_events_come_in_openais_order(server):
    body = {"model": MODEL, "input": "Hi", "max_output_tokens": 5, "temperature": 0, "stream": True,
            "reasoning": NO_THINK}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=TIMEOUT) as response:
        datas = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    types = [d["type"] for d in datas]
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    if "response.output_text.delta" in types:
        assert types[2:4] == ["response.output_item.added", "response.content_part.added"]
        assert types[-4:-1] == ["response.output_text.done", "response.content_part.done",
                                "response.output_item.done"]
    final = datas[-1]["response"]
    added = [d["item"]["id"] for d in datas if d["type"] == "response.output_item.added"]
    assert [item["id"] for item in final["output"]] == added


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "name": "get_weather"}])
def test_a_forced_function_call_validates_and_round_trips(client, tokenizer, tool_choice):
    first = client.responses.create(model=MODEL, input="Weather?", tools=[WEATHER], tool_choice=tool_choice,
                                    parallel_tool_calls=False, max_output_tokens=80, temperature=0,
                                    reasoning=NO_THINK)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), PARAMS)
    history = [{"role": "user", "content": "Weather?"}, call,
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = client.responses.create(model=MODEL, input=history, tools=[WEATHER], max_output_tokens=4,
                                     temperature=0, reasoning=NO_THINK)
    chat_history = [history[0], {"role": "assistant", "content": "", "tool_calls": [
        {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}]
    prompt = tokenizer.apply_chat_template(chat_history, tools=[CHAT_WEATHER], add_generation_prompt=True,
                                           enable_thinking=False)
    assert "<tool_response>\nsunny\n</tool_response>" in prompt
    assert second.usage.input_tokens == len(tokenizer.encode(prompt))


def test_a_streamed_forced_call_assembles(client):
    with client.responses.stream(model=MODEL, input="Weather?", tools=[WEATHER], tool_choice="required",
                                 parallel_tool_calls=False, max_output_tokens=80, temperature=0,
                                 reasoning=NO_THINK) as stream:
        final = stream.get_final_response()
    (call,) = [item for item in final.output if item.type == "function_call"]
    jsonschema.validate(json.loads(call.arguments), PARAMS)


def test_json_schema_output_validates(client):
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]},
                                               "count": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["colour", "count"], "additionalProperties": False}
    for seed_temperature in (0, 1):
        response = client.responses.create(
            model=MODEL, input="A colour?", max_output_tokens=60, temperature=seed_temperature, reasoning=NO_THINK,
            text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}})
        assert response.status == "completed"
        jsonschema.validate(json.loads(response.output_text), schema)


# ------------------------------------------------------------------------------------ a scripted model

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
SCRIPTS = {
    "think then call": "<think>\nThe user wants weather.\n</think>\n\nLet me check." + CALL,
    "two calls": CALL + "\n" + CALL.replace("Paris", "Rome"),
    "truncated": "<think>\nLong thought",
    "plain": "Hello.",
    "failing": "This answer breaks off half-way through.",
}


@pytest.fixture(scope="module", params=["by_token", "by_char"])
def scripted(request, tokenizer_dir):
    with scripted_server(tokenizer_dir, SCRIPTS, request.param == "by_char") as running:
        yield running


def summary(response) -> list[tuple]:
    out = []
    for item in response.output:
        if item.type == "reasoning":
            out.append(("reasoning", "".join(part.text for part in item.content)))
        elif item.type == "message":
            out.append(("message", "".join(part.text for part in item.content)))
        else:
            out.append(("function_call", item.name, json.loads(item.arguments)))
    return out


def test_reasoning_text_and_calls_are_items_whole_and_streamed(scripted):
    client = scripted.client()
    whole = client.responses.create(model=MODEL, input="think then call", tools=[WEATHER])
    assert summary(whole) == [("reasoning", "The user wants weather."), ("message", "Let me check."),
                              ("function_call", "get_weather", {"city": "Paris", "unit": "celsius"})]
    assert whole.output_text == "Let me check." and whole.usage.output_tokens_details.reasoning_tokens > 0
    with client.responses.stream(model=MODEL, input="think then call", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    assert summary(final) == summary(whole)
    two = client.responses.create(model=MODEL, input="two calls", tools=[WEATHER], reasoning=NO_THINK)
    assert [s[2]["city"] for s in summary(two)] == ["Paris", "Rome"]
    assert len({item.call_id for item in two.output}) == 2


def test_a_cut_output_is_incomplete(scripted):
    response = scripted.client().responses.create(model=MODEL, input="truncated")
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert summary(response) == [("reasoning", "Long thought")]


@pytest.mark.parametrize(("effort", "thinks"), [("none", False), ("minimal", False), ("low", True),
                                                ("high", True), ("xhigh", True), (None, True)])
def test_reasoning_effort_maps_onto_thinking(scripted, effort, thinks):
    extra = {"reasoning": {"effort": effort}} if effort else {}
    scripted.client().responses.create(model=MODEL, input="plain", **extra)
    assert scripted.engine.prompts[-1].endswith("<think>\n\n</think>\n\n") is not thinks


def test_a_stream_failing_mid_way_ends_with_an_error_event(scripted):
    events = list(scripted.client().responses.create(model=MODEL, input="failing", stream=True,
                                                     reasoning=NO_THINK))
    assert events[-1].type == "error" and events[-1].code == "internal_error"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.completed" not in [e.type for e in events]


def test_sampling_fields_reach_the_engine(scripted):
    scripted.client().responses.create(model=MODEL, input="plain", temperature=0.4, top_p=0.7,
                                       max_output_tokens=33)
    params = scripted.engine.params[-1]
    assert (params.temperature, params.top_p, params.max_tokens) == (0.4, 0.7, 33)


def test_store_is_accepted_and_nothing_is_stored(scripted):
    response = scripted.client().responses.create(model=MODEL, input="plain", store=True)
    assert response.store is False
    with pytest.raises(openai.BadRequestError) as caught:
        scripted.client().responses.create(model=MODEL, input="plain", previous_response_id=response.id)
    assert caught.value.body["param"] == "previous_response_id"


# ------------------------------------------------------------------------------------ hostile bodies

CALL_ITEM = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
HOSTILE = {
    "previous_response_id": ({"previous_response_id": "resp_1"}, "previous_response_id"),
    "conversation": ({"conversation": "conv_1"}, "conversation"),
    "background": ({"background": True}, "background"),
    "web_search tool": ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    "file_search tool": ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[1].type"),
    "function tool without a name": ({"tools": [{"type": "function"}]}, "tools[0].name"),
    "output without a call": ({"input": [{"role": "user", "content": "x"}, {
        "type": "function_call_output", "call_id": "call_9", "output": "x"}]}, "input[1].call_id"),
    "call without an output": ({"input": [{"role": "user", "content": "x"}, CALL_ITEM]}, "input[1].call_id"),
    "call answered twice": ({"input": [{"role": "user", "content": "x"}, CALL_ITEM,
                                       {"type": "function_call_output", "call_id": "call_1", "output": "a"},
                                       {"type": "function_call_output", "call_id": "call_1", "output": "b"}]},
                            "input[3].call_id"),
    "call without arguments": ({"input": [{"role": "user", "content": "x"}, {
        "type": "function_call", "call_id": "c", "name": "f"}]}, "input[1].arguments"),
    "image input": ({"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "http://x/y.png"}]}]}, "input[0].content[0]"),
    "unknown item": ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    "message without role": ({"input": [{"type": "message", "content": "x"}]}, "input[0].role"),
    "empty input": ({"input": []}, "input"),
    "unknown named function": ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
                               "tool_choice"),
    "hosted tool_choice": ({"tools": [WEATHER], "tool_choice": {"type": "file_search"}}, "tool_choice"),
    "json_schema without schema": ({"text": {"format": {"type": "json_schema", "name": "x"}}},
                                   "text.format.schema"),
    "bad temperature": ({"temperature": -1}, "temperature"),
    "max_output_tokens past the context": ({"max_output_tokens": 10**6}, "max_output_tokens"),
    "bad effort": ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_bad_input_is_a_400_naming_the_field(scripted, case):
    change, named = HOSTILE[case]
    body = {"model": MODEL, "input": "plain", **change}
    response = httpx.post(f"{scripted.url}/v1/responses", json=body, timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == named or named in error["message"], error
