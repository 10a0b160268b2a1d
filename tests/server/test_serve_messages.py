"""POST /v1/messages and /v1/messages/count_tokens through the official `anthropic` client: the tiny random model
end to end (plain, streamed, forced tool use, tool_result round trip, token counts, greedy text equal to chat),
and a scripted engine for what a random model never writes (thinking, tool calls, stop sequences)."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import pytest
from scripted import scripted_server
from serverkit import MODEL, TIMEOUT

WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                                             "days": {"type": "integer", "minimum": 1, "maximum": 14}},
                            "required": ["city", "days"], "additionalProperties": False}}
USER = [{"role": "user", "content": "Hi there"}]
GREEDY = {"temperature": 0}


def claude(server, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=kwargs.pop("api_key", "unused"), max_retries=0,
                               timeout=TIMEOUT, **kwargs)


# ------------------------------------------------------------------------------------ the tiny model


def test_a_message_has_anthropic_shape_and_exact_usage(server, tokenizer):
    reply = claude(server).messages.create(model=MODEL, max_tokens=6, messages=USER, extra_body=GREEDY)
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.model == MODEL
    assert [block.type for block in reply.content] in (["text"], [])
    assert reply.stop_reason in ("end_turn", "max_tokens") and reply.stop_sequence is None
    prompt = tokenizer.apply_chat_template(USER, add_generation_prompt=True, enable_thinking=False)
    assert reply.usage.input_tokens == len(tokenizer.encode(prompt))
    assert 1 <= reply.usage.output_tokens <= 6


@pytest.mark.parametrize("thinking", [None, {"type": "enabled", "budget_tokens": 4}])
def test_greedy_text_equals_chat_completions_for_the_same_conversation(server, client, thinking):
    system = "You are terse."
    messages = [{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": [{"type": "text", "text": "Another"}]}]
    extra = {"thinking": thinking} if thinking else {}
    reply = claude(server).messages.create(model=MODEL, max_tokens=10, system=system, messages=messages,
                                           extra_body=GREEDY, **extra)
    chat = client.chat.completions.create(
        model=MODEL, max_tokens=10, temperature=0, messages=[{"role": "system", "content": system}, *messages],
        extra_body={"chat_template_kwargs": {"enable_thinking": thinking is not None},
                    "max_thinking_tokens": 4 if thinking else None}).choices[0].message
    blocks = {block.type: block for block in reply.content}
    assert (blocks["text"].text if "text" in blocks else None) == (chat.content or None)
    reasoning = chat.model_extra.get("reasoning_content")
    assert (blocks["thinking"].thinking if "thinking" in blocks else None) == reasoning
    assert "text" in blocks or "thinking" in blocks


def test_the_stream_helper_assembles_the_same_message(server):
    client = claude(server)
    whole = client.messages.create(model=MODEL, max_tokens=8, messages=USER, extra_body=GREEDY)
    with client.messages.stream(model=MODEL, max_tokens=8, messages=USER, extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.id.startswith("msg_") and final.stop_reason == whole.stop_reason
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in whole.content]
    assert text == "".join(b.text for b in whole.content if b.type == "text")
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_the_raw_event_sequence_is_anthropics(server):
    body = {"model": MODEL, "max_tokens": 5, "messages": USER, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{server.url}/v1/messages", json=body, timeout=TIMEOUT) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    datas = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in datas] == names  # every event names its type twice, as Anthropic's do
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert datas[0]["message"]["stop_reason"] is None and datas[0]["message"]["content"] == []
    middle = names[1:-2]
    assert middle[0] == "content_block_start" and middle[-1] == "content_block_stop"
    assert set(middle[1:-1]) <= {"content_block_delta"}
    assert datas[-2]["delta"]["stop_reason"] in ("end_turn", "max_tokens") and datas[-2]["usage"]["output_tokens"]


def test_tool_choice_any_forces_a_tool_use_whose_input_validates(server):
    reply = claude(server).messages.create(model=MODEL, max_tokens=80, messages=USER, tools=[WEATHER],
                                           tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                           extra_body=GREEDY)
    assert reply.stop_reason == "tool_use"
    (use,) = [block for block in reply.content if block.type == "tool_use"]
    assert use.id.startswith("toolu_") and use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER["input_schema"])


def test_a_named_tool_is_forced_and_streamed_as_input_json(server):
    other = {"name": "noop", "input_schema": {"type": "object", "properties": {}}}
    with claude(server).messages.stream(model=MODEL, max_tokens=80, messages=USER, tools=[other, WEATHER],
                                        tool_choice={"type": "tool", "name": "get_weather"},
                                        extra_body=GREEDY) as stream:
        final = stream.get_final_message()
    uses = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use" and [u.name for u in uses] == ["get_weather"]
    jsonschema.validate(uses[0].input, WEATHER["input_schema"])


def test_a_tool_result_round_trip(server, tokenizer):
    client = claude(server)
    first = client.messages.create(model=MODEL, max_tokens=80, messages=USER, tools=[WEATHER],
                                   tool_choice={"type": "any", "disable_parallel_tool_use": True}, extra_body=GREEDY)
    use = next(block for block in first.content if block.type == "tool_use")
    history = [*USER, {"role": "assistant", "content": first.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                             "content": [{"type": "text", "text": "sunny, 21 C"}]}]}]
    counted = client.messages.count_tokens(model=MODEL, messages=history, tools=[WEATHER])
    second = client.messages.create(model=MODEL, max_tokens=6, messages=history, tools=[WEATHER],
                                    extra_body=GREEDY)
    assert second.usage.input_tokens == counted.input_tokens
    chat_history = [*USER, {"role": "assistant", "content": "", "tool_calls": [
        {"id": use.id, "type": "function", "function": {"name": use.name, "arguments": json.dumps(use.input)}}]},
        {"role": "tool", "tool_call_id": use.id, "content": "sunny, 21 C"}]
    tools = [{"type": "function", "function": {"name": WEATHER["name"], "description": WEATHER["description"],
                                               "parameters": WEATHER["input_schema"]}}]
    prompt = tokenizer.apply_chat_template(chat_history, tools=tools, add_generation_prompt=True,
                                           enable_thinking=False)
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in prompt
    assert counted.input_tokens == len(tokenizer.encode(prompt))


def test_count_tokens_equals_the_rendered_prompt_length(server, tokenizer):
    system = [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind.", "cache_control": {
        "type": "ephemeral"}}]
    counted = claude(server).messages.count_tokens(model=MODEL, system=system, messages=USER, tools=[WEATHER],
                                                   thinking={"type": "enabled", "budget_tokens": 2000})
    tools = [{"type": "function", "function": {"name": WEATHER["name"], "description": WEATHER["description"],
                                               "parameters": WEATHER["input_schema"]}}]
    prompt = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief.\nBe kind."}, *USER],
                                           tools=tools, add_generation_prompt=True, enable_thinking=True)
    assert counted.input_tokens == len(tokenizer.encode(prompt))


def test_output_config_json_schema_constrains_the_text(server):
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}}, "required": ["colour"],
              "additionalProperties": False}
    reply = claude(server).messages.create(model=MODEL, max_tokens=40, messages=USER, extra_body={"temperature": 1},
                                           output_config={"format": {"type": "json_schema", "schema": schema}})
    assert reply.stop_reason == "end_turn"
    jsonschema.validate(json.loads(reply.content[0].text), schema)


# ------------------------------------------------------------------------------------ a scripted model

THOUGHT = "<think>\nThe user wants weather.\n</think>\n\n"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'
SCRIPTS = {
    "think then answer": THOUGHT + "It is sunny.",
    "think then call": THOUGHT + "Let me check." + CALL,
    "two calls": CALL + "\n" + CALL.replace("Paris", "Rome"),
    "stopped": "Counting: 1, 2,",
    "failing": "This answer breaks off half-way through.",
    "plain": "Hello.",
}


@pytest.fixture(scope="module", params=["by_token", "by_char"])
def scripted(request, tokenizer_dir):
    with scripted_server(tokenizer_dir, SCRIPTS, request.param == "by_char", api_key="sk-key") as running:
        yield running


def ask(key: str) -> list[dict]:
    return [{"role": "user", "content": f"Please: {key}"}]


def create(server, key: str, **kwargs):
    return claude(server, api_key="sk-key").messages.create(model=MODEL, max_tokens=200, messages=ask(key),
                                                            **kwargs)


def streamed(server, key: str, **kwargs):
    with claude(server, api_key="sk-key").messages.stream(model=MODEL, max_tokens=200, messages=ask(key),
                                                          **kwargs) as stream:
        return stream.get_final_message()


THINKING = {"type": "enabled", "budget_tokens": 50}


@pytest.mark.parametrize("call", [create, streamed])
def test_thinking_is_a_thinking_block_never_text(scripted, call):
    reply = call(scripted, "think then answer", thinking=THINKING)
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in reply.content] == [
        ("thinking", "The user wants weather."), ("text", "It is sunny.")]
    assert reply.content[0].signature == "" and reply.stop_reason == "end_turn"


@pytest.mark.parametrize("call", [create, streamed])
def test_tool_calls_are_tool_use_blocks(scripted, call):
    reply = call(scripted, "think then call", thinking=THINKING, tools=[WEATHER])
    assert [b.type for b in reply.content] == ["thinking", "text", "tool_use"]
    assert reply.content[2].input == {"city": "Paris", "days": 2} and reply.content[2].id.startswith("toolu_")
    assert reply.stop_reason == "tool_use"
    two = call(scripted, "two calls", tools=[WEATHER])
    assert [b.input["city"] for b in two.content] == ["Paris", "Rome"]
    assert two.content[0].id != two.content[1].id


def test_without_tools_or_with_tool_choice_none_calls_stay_text(scripted):
    for extra in ({}, {"tools": [WEATHER], "tool_choice": {"type": "none"}}):
        reply = create(scripted, "two calls", **extra)
        assert [b.type for b in reply.content] == ["text"] and reply.stop_reason == "end_turn"
        assert "<tools>" not in scripted.engine.prompts[-1]


@pytest.mark.parametrize("call", [create, streamed])
def test_a_stop_sequence_is_reported(scripted, call):
    reply = call(scripted, "stopped", stop_sequences=[" 3", "never"])
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == " 3"
    assert scripted.engine.params[-1].stop == [" 3", "never"]


def test_thinking_maps_onto_the_template_and_the_budget(scripted):
    empty_think = "<think>\n\n</think>\n\n"
    create(scripted, "plain")  # absent: no thinking, as Claude's default
    assert scripted.engine.prompts[-1].endswith(empty_think)
    assert scripted.engine.params[-1].max_thinking_tokens is None
    create(scripted, "plain", thinking={"type": "disabled"})
    assert scripted.engine.prompts[-1].endswith(empty_think)
    create(scripted, "plain", thinking={"type": "enabled", "budget_tokens": 77})
    assert scripted.engine.prompts[-1].endswith("<|im_start|>assistant\n")
    assert scripted.engine.params[-1].max_thinking_tokens == 77


def test_sampling_fields_arrive_in_the_body_or_through_extra_body(scripted):
    sampling = {"temperature": 0.3, "top_p": 0.8, "top_k": 7}
    create(scripted, "plain", extra_body=sampling)  # how the 2.x client sends them
    params = scripted.engine.params[-1]
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0.3, 0.8, 7, 200)
    body = {"model": MODEL, "max_tokens": 9, "messages": ask("plain"), "temperature": 0.5, "top_k": 3}
    response = httpx.post(f"{scripted.url}/v1/messages", json=body, headers={"x-api-key": "sk-key"},
                          timeout=TIMEOUT)
    assert response.status_code == 200
    params = scripted.engine.params[-1]
    assert (params.temperature, params.top_k, params.max_tokens) == (0.5, 3, 9)


def test_a_stream_failing_mid_way_ends_with_an_anthropic_error_event(scripted):
    body = {"model": MODEL, "max_tokens": 50, "messages": ask("failing"), "stream": True}
    with httpx.stream("POST", f"{scripted.url}/v1/messages", json=body, headers={"x-api-key": "sk-key"},
                      timeout=TIMEOUT) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-2] == "event: error"
    error = json.loads(lines[-1].removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "internal server error" in error["error"]["message"]
    with pytest.raises(anthropic.APIStatusError):
        streamed(scripted, "failing")


def test_a_max_tokens_past_the_context_is_clamped_to_it(scripted):
    """Claude Code asks for 32000 tokens whatever the model: the answer may use the rest of the context."""
    reply = claude(scripted, api_key="sk-key").messages.create(model=MODEL, max_tokens=64000, messages=ask("plain"))
    assert reply.content[0].text == "Hello."
    assert scripted.engine.params[-1].max_tokens == 4096 - reply.usage.input_tokens


@pytest.mark.parametrize("headers", [{"x-api-key": "sk-key"}, {"Authorization": "Bearer sk-key"}])
def test_the_api_key_goes_in_either_header(scripted, headers):
    body = {"model": MODEL, "max_tokens": 9, "messages": ask("plain")}
    assert httpx.post(f"{scripted.url}/v1/messages", json=body, headers=headers, timeout=TIMEOUT).status_code == 200


def test_a_wrong_key_is_an_anthropic_shaped_401(scripted):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        claude(scripted, api_key="wrong").messages.create(model=MODEL, max_tokens=5, messages=USER)
    assert caught.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                            "message": "incorrect API key provided"}}


# ------------------------------------------------------------------------------------ hostile bodies

TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo", "days": 1}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "cold"}
HOSTILE = {
    "unknown block type": ({"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
                           "messages[0].content"),
    "image block": ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]},
        "messages[0].content[0]"),
    "tool_use without tool_result": ({"messages": [*USER, {"role": "assistant", "content": [TOOL_USE]},
                                                   {"role": "user", "content": "and?"}]}, "toolu_1"),
    "tool_use last": ({"messages": [*USER, {"role": "assistant", "content": [TOOL_USE]}]}, "toolu_1"),
    "tool_result without tool_use": ({"messages": [*USER, {"role": "assistant", "content": "ok"},
                                                   {"role": "user", "content": [RESULT]}]},
                                     "messages[2].content[0].tool_use_id"),
    "tool_result in an assistant turn": ({"messages": [*USER, {"role": "assistant", "content": [RESULT]},
                                                       *USER]}, "messages[1].content[0].type"),
    "duplicate tool_use ids": ({"messages": [*USER, {"role": "assistant", "content": [TOOL_USE, TOOL_USE]},
                                             {"role": "user", "content": [RESULT]}]}, "messages[1].content[1].id"),
    "budget_tokens zero": ({"thinking": {"type": "enabled", "budget_tokens": 0}}, "thinking.budget_tokens"),
    "budget_tokens not below max_tokens": ({"thinking": {"type": "enabled", "budget_tokens": 50}},
                                           "thinking.budget_tokens"),
    "budget_tokens missing": ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    "not alternating": ({"messages": [*USER, *USER]}, "messages[1].role"),
    "assistant first": ({"messages": [{"role": "assistant", "content": "hi"}, *USER]}, "messages[0].role"),
    "assistant last (prefill)": ({"messages": [*USER, {"role": "assistant", "content": "The answer is"}]},
                                 "messages[1]"),
    "empty messages": ({"messages": []}, "messages"),
    "empty content": ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
    "missing max_tokens": ({"max_tokens": None}, "max_tokens"),
    "server tool": ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    "tool without input_schema": ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    "tool_choice tool without name": ({"tools": [WEATHER], "tool_choice": {"type": "tool"}},
                                      "tool_choice.name"),
    "tool_choice names an unknown tool": ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}},
                                          "tool_choice"),
    "tool_choice without tools": ({"tool_choice": {"type": "any"}}, "tool_choice"),
    "bad temperature": ({"temperature": -1}, "temperature"),
    "too many stop sequences": ({"stop_sequences": [str(i) for i in range(100)]}, "stop_sequences"),
    "mcp_servers": ({"mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}]}, "mcp_servers"),
    "schema that does not compile": ({"output_config": {"format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)a"}}}}}},
        "output_config.format"),
}


def post_messages(server, body: dict, path: str = "/v1/messages") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers={"x-api-key": "sk-key"}, timeout=TIMEOUT)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_bad_input_is_an_anthropic_400_naming_the_field(scripted, case):
    change, named = HOSTILE[case]
    body = {"model": MODEL, "max_tokens": 50, "messages": ask("plain"), **change}
    body = {key: value for key, value in body.items() if value is not None}
    response = post_messages(scripted, body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert named in error["error"]["message"]


def test_the_client_raises_bad_request_with_the_message(scripted):
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(scripted, "plain", thinking={"type": "enabled", "budget_tokens": 500})
    assert "budget_tokens must be at least 1 and less than max_tokens (200)" in caught.value.message


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"model": "tiny-qwen3"}'])
def test_malformed_bodies_are_anthropic_400s(scripted, raw):
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = httpx.post(f"{scripted.url}{path}", content=raw, timeout=TIMEOUT,
                              headers={"x-api-key": "sk-key", "content-type": "application/json"})
        assert response.status_code == 400 and response.json()["type"] == "error"


def test_an_unknown_model_is_an_anthropic_404(scripted):
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude(scripted, api_key="sk-key").messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=USER)
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert "tiny-qwen3" in caught.value.body["error"]["message"]


def test_count_tokens_refuses_what_messages_refuses(scripted):
    response = post_messages(scripted, {"model": MODEL, "messages": [*USER, *USER]}, "/v1/messages/count_tokens")
    assert response.status_code == 400 and "messages[1].role" in response.json()["error"]["message"]
