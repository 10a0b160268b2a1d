"""OpenAI's published contract, the parts strict types would get wrong: response fields it requires, request values
it allows (null for "the default", 2.0 for an integer, top_p 0, "" stops and prompts), legacy and refusal
message forms, and options qwick refuses by name instead of ignoring."""

from __future__ import annotations

import json

import openai
import pytest
from serverkit import MODEL

USER = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0.0, "ignore_eos": True}


def chat(server, **fields):
    return server.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, "max_tokens": 3, **fields})


def complete(server, **fields):
    return server.post("/v1/completions", json={"model": MODEL, "prompt": "Hello", "max_tokens": 3, **fields})


def test_a_chat_message_has_a_null_refusal_and_no_tool_calls_key(server):
    reply = chat(server, logprobs=True)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert "refusal" in choice["message"] and choice["message"]["refusal"] is None
    assert "tool_calls" not in choice["message"]
    assert choice["logprobs"]["refusal"] is None and len(choice["logprobs"]["content"]) == 3


def test_streamed_logprobs_carry_a_null_refusal(server):
    events = chat(server, max_tokens=2, logprobs=True, stream=True).text.split("\n\n")
    chunks = [json.loads(e[len("data: "):]) for e in events if e.startswith("data: {")]
    logprobs = [c["choices"][0]["logprobs"] for c in chunks if c["choices"] and c["choices"][0].get("logprobs")]
    assert logprobs and all("refusal" in lp and lp["refusal"] is None and lp["content"] for lp in logprobs)


def test_null_means_the_default_in_chat(server):
    reply = chat(server, stream=None, logprobs=None, n=None, top_logprobs=None, stream_options=None, seed=None)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["choices"]) == 1 and body["choices"][0]["logprobs"] is None


def test_null_means_the_default_in_completions(server, tokenizer):
    reply = complete(server, n=None, stream=None, echo=None, prompt=None)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["choices"]) == 1 and body["usage"]["prompt_tokens"] == 1  # the <|endoftext|> default prompt


def test_an_empty_prompt_starts_from_endoftext(server, client, tokenizer):
    reply = client.completions.create(model=MODEL, prompt="", max_tokens=4, temperature=0.0)
    boundary = tokenizer.token_to_id("<|endoftext|>")
    same = client.completions.create(model=MODEL, prompt=[boundary], max_tokens=4, temperature=0.0)
    assert reply.usage.prompt_tokens == 1 and reply.choices[0].text == same.choices[0].text
    assert client.completions.create(model=MODEL, prompt=["", "Hi"], max_tokens=1).usage.prompt_tokens >= 2


def test_whole_numbers_written_as_floats_are_integers(server):
    floats = chat(server, seed=1.0, n=2.0, logprobs=True, top_logprobs=2.0, max_tokens=3.0, temperature=1.0)
    ints = chat(server, seed=1, n=2, logprobs=True, top_logprobs=2, max_tokens=3, temperature=1.0)
    assert floats.status_code == 200, floats.text
    texts = [[c["message"] for c in r.json()["choices"]] for r in (floats, ints)]
    assert texts[0] == texts[1] and len(texts[0]) == 2
    assert all(len(t["top_logprobs"]) == 2 for c in floats.json()["choices"] for t in c["logprobs"]["content"])
    legacy = complete(server, logprobs=2.0, max_tokens=2.0, n=1.0)
    assert legacy.status_code == 200, legacy.text
    assert len(legacy.json()["choices"][0]["logprobs"]["tokens"]) == 2


def test_embedding_dimensions_as_a_whole_float(server):
    reply = server.post("/v1/embeddings", json={"model": MODEL, "input": "hi", "dimensions": 4.0})
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["data"][0]["embedding"]) == 4
    bad = server.post("/v1/embeddings", json={"model": MODEL, "input": "hi", "dimensions": 4.5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "dimensions"


@pytest.mark.parametrize("seed", range(3))
def test_top_p_zero_keeps_only_the_most_likely_token(client, seed):
    greedy = client.completions.create(model=MODEL, prompt="Once upon", max_tokens=6, temperature=0.0,
                                       extra_body={"ignore_eos": True})
    nucleus = client.completions.create(model=MODEL, prompt="Once upon", max_tokens=6, temperature=1.5, top_p=0,
                                        seed=seed, extra_body={"ignore_eos": True, "top_k": 0})
    assert nucleus.choices[0].text == greedy.choices[0].text


def test_empty_stop_strings_are_ignored(client):
    plain = client.completions.create(model=MODEL, prompt="Hello", max_tokens=5, extra_body=GREEDY)
    with_empty = client.completions.create(model=MODEL, prompt="Hello", max_tokens=5, stop=["", ""],
                                           extra_body=GREEDY)
    assert with_empty.choices[0].text == plain.choices[0].text and with_empty.choices[0].finish_reason == "length"


def test_a_refusal_part_in_assistant_history_renders_as_text(server, client, tokenizer):
    history = [*USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot say."}]},
               {"role": "user", "content": "Why?"}]
    assert client.chat.completions.create(model=MODEL, messages=history, max_tokens=1).choices
    rendered = server.post("/tokenize", json={"messages": history}).json()["tokens"]
    assert "<|im_start|>assistant\nI cannot say.<|im_end|>" in tokenizer.decode(rendered)


@pytest.mark.parametrize(("fields", "param"), [
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"prediction": {"type": "content", "content": "Paris"}}, "prediction"),
])
def test_options_that_change_the_answer_are_refused_by_name(client, fields, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1, **fields)
    assert info.value.code == "unsupported_parameter" and info.value.param == param


def test_harmless_options_are_accepted(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1, modalities=["text"], store=False,
                                           metadata={"team": "a"}, service_tier="auto", user="u-1")
    assert reply.choices[0].finish_reason == "length"
