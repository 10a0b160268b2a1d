"""/v1/models, /health, /v1/chat/completions and /tokenize against a real server, through the openai package."""

from __future__ import annotations

import asyncio

import pytest
from serverkit import MAX_MODEL_LEN, MODEL, TIMEOUT

USER = [{"role": "user", "content": "What is the capital of France?"}]
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
EXACT = {"ignore_eos": True}  # a random model may emit EOS any time: pin the length where counts matter


def prompt_tokens(tokenizer, messages, **template_kwargs) -> int:
    return len(tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True, **template_kwargs)))


def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].owned_by == "qwick" and models[0].model_extra["max_model_len"] == MAX_MODEL_LEN


def test_health_is_ok_while_the_engine_runs(server):
    assert server.get("/health").status_code == 200


def test_chat_completion_has_openai_shape_and_exact_usage(client, tokenizer):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=7, extra_body=EXACT)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == MODEL
    (choice,) = reply.choices
    assert choice.index == 0 and choice.finish_reason == "length" and choice.message.role == "assistant"
    assert reply.usage.prompt_tokens == prompt_tokens(tokenizer, USER)
    assert reply.usage.completion_tokens == 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 7


def test_max_completion_tokens_wins_over_max_tokens(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=9, max_completion_tokens=3,
                                           extra_body=EXACT)
    assert reply.usage.completion_tokens == 3


def test_stream_ends_with_usage_and_done(server, client, tokenizer):
    stream = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=6, stream=True,
                                            stream_options={"include_usage": True}, extra_body=EXACT)
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "length"
    assert all(c.usage is None for c in chunks[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens(tokenizer, USER), 6)
    raw = server.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert '"usage"' not in raw.text  # only sent when asked for


def test_streamed_text_equals_the_non_streamed_text(client):
    kwargs = dict(model=MODEL, messages=USER, max_tokens=12, temperature=0.0, extra_body={**NO_THINK, **EXACT})
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs)
              if c.choices]
    assert "".join(pieces) == whole


def test_n_returns_n_choices_and_counts_their_tokens(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4, n=3, extra_body=EXACT)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage.completion_tokens == 12
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4, n=2, stream=True,
                                                 stream_options={"include_usage": True}, extra_body=EXACT))
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1} and chunks[-1].usage.completion_tokens == 8


def test_thinking_goes_to_reasoning_fields_never_into_content(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8, extra_body=EXACT)
    message = reply.choices[0].message.model_extra
    assert reply.choices[0].message.content == ""  # a random model never closes its <think> block
    assert message["reasoning_content"] and message["reasoning"] == message["reasoning_content"]
    for chunk in client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8, stream=True,
                                                extra_body=EXACT):
        delta = chunk.choices[0].delta
        assert "<think>" not in (delta.content or "")
        assert (delta.model_extra or {}).get("reasoning") == (delta.model_extra or {}).get("reasoning_content")


def test_thinking_disabled_puts_everything_in_content(client, server):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8, extra_body={**NO_THINK, **EXACT})
    message = reply.choices[0].message
    assert message.content and "<think>" not in message.content
    assert message.model_extra.get("reasoning_content") is None and message.model_extra.get("reasoning") is None
    rendered = server.post("/tokenize", json={"messages": USER, **NO_THINK}).json()["tokens"]
    assert server.llm.get_tokenizer().decode(rendered).endswith("<think>\n\n</think>\n\n")


def test_logprobs_are_in_openai_format(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=5, logprobs=True, top_logprobs=3,
                                           extra_body=EXACT)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 5
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
        assert entry.logprob <= entry.top_logprobs[0].logprob + 1e-6
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token or "\ufffd" in entry.token


def test_streamed_logprobs_cover_every_token(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, max_tokens=5, logprobs=True,
                                                 top_logprobs=1, stream=True, extra_body=EXACT, temperature=0))
    entries = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert len(entries) == 5 and all(len(e.top_logprobs) == 1 for e in entries)
    # streamed as the tokens come (one token per chunk), not all at the end, and equal to the whole reply's
    carrying = [c for c in chunks if c.choices and c.choices[0].logprobs]
    assert len(carrying) == 5 and all(len(c.choices[0].logprobs.content) == 1 for c in carrying)
    whole = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=5, logprobs=True, top_logprobs=1,
                                           extra_body=EXACT, temperature=0).choices[0].logprobs.content
    assert [(e.token, round(e.logprob, 5)) for e in entries] == [(e.token, round(e.logprob, 5)) for e in whole]


def test_seed_makes_sampling_repeatable(client):
    kwargs = dict(model=MODEL, messages=USER, max_tokens=8, temperature=1.0, seed=7, extra_body=NO_THINK)
    first, second = (client.chat.completions.create(**kwargs).choices[0].message.content for _ in range(2))
    assert first == second


def test_vllm_sampling_extras_are_accepted(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=USER, max_tokens=6, temperature=0.7, top_p=0.9, presence_penalty=0.5,
        frequency_penalty=0.5, stop=["\n\n\n"],
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "min_tokens": 6, "ignore_eos": True,
                    "max_thinking_tokens": 3, "skip_special_tokens": True})
    assert reply.usage.completion_tokens == 6


def test_content_parts_and_every_role_render(client, tokenizer):
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Paris?"}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    expected = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather\nin Paris?"},
                {**messages[2], "content": ""}, messages[3]]
    assert reply.usage.prompt_tokens == prompt_tokens(tokenizer, expected)


def test_tokenize_and_detokenize_round_trip(server, tokenizer):
    reply = server.post("/tokenize", json={"prompt": "Hello world", "return_token_strs": True}).json()
    assert reply["tokens"] == tokenizer.encode("Hello world") and reply["count"] == len(reply["tokens"])
    assert reply["max_model_len"] == MAX_MODEL_LEN and reply["token_strs"][1] == "Ġworld"
    assert server.post("/detokenize", json={"tokens": reply["tokens"]}).json() == {"prompt": "Hello world"}
    chat = server.post("/tokenize", json={"messages": USER}).json()
    assert chat["count"] == prompt_tokens(tokenizer, USER)


def test_request_id_is_echoed_or_generated(server):
    given = server.get("/v1/models", headers={"X-Request-Id": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    generated = server.get("/v1/models").headers["x-request-id"]
    assert len(generated) == 32 and generated != server.get("/v1/models").headers["x-request-id"]
    bad = server.get("/v1/models", headers={"X-Request-Id": "bad id\x7f"})
    # h11 hands the header on and qwick replaces it; httptools (uvicorn[standard]) refuses the request itself
    assert (bad.status_code, bad.headers.get("x-request-id")) == (400, None) or (
        bad.status_code == 200 and bad.headers["x-request-id"] != "bad id\x7f")


def test_async_client_streams(server, tokenizer):
    async def main() -> list:
        async with server.async_client() as aclient:
            stream = await aclient.chat.completions.create(model=MODEL, messages=USER, max_tokens=3, stream=True,
                                                           stream_options={"include_usage": True}, extra_body=EXACT)
            return [chunk async for chunk in stream]

    chunks = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert chunks[-1].usage.completion_tokens == 3


@pytest.mark.parametrize("tool_choice", ["auto", "none"])
def test_tools_reach_the_prompt_unless_tool_choice_is_none(client, tokenizer, tool_choice):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    reply = client.chat.completions.create(model=MODEL, messages=USER, tools=tools, tool_choice=tool_choice,
                                           max_tokens=4, extra_body=EXACT)
    rendered = tokenizer.apply_chat_template(USER, tools=tools if tool_choice == "auto" else None,
                                             add_generation_prompt=True)
    assert reply.usage.prompt_tokens == len(tokenizer.encode(rendered))
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].message.tool_calls is None
