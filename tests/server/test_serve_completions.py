"""/v1/completions: prompt as text, list of texts, token ids and lists of them; echo; logprobs; streaming."""

from __future__ import annotations

from serverkit import MODEL

EXACT = {"ignore_eos": True}


def test_text_prompt(client, tokenizer):
    reply = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, extra_body=EXACT)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].text
    assert reply.usage.prompt_tokens == len(tokenizer.encode("Once upon a time"))
    assert reply.usage.completion_tokens == 5


def test_default_max_tokens_is_16_like_openai(client):
    assert client.completions.create(model=MODEL, prompt="Hi", extra_body=EXACT).usage.completion_tokens == 16


def test_list_of_prompts_times_n_choices_in_order(client, tokenizer):
    prompts = ["The sky is", "1, 2, 3,"]
    reply = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=3, extra_body=EXACT)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in prompts)
    assert reply.usage.completion_tokens == 12


def test_token_id_prompts_equal_their_text(client, tokenizer):
    ids = tokenizer.encode("The quick brown fox")
    greedy = dict(model=MODEL, max_tokens=6, temperature=0.0, extra_body=EXACT)
    by_text = client.completions.create(prompt="The quick brown fox", **greedy).choices[0].text
    assert client.completions.create(prompt=ids, **greedy).choices[0].text == by_text
    batch = client.completions.create(prompt=[ids, ids[:2]], **greedy)
    assert batch.choices[0].text == by_text and batch.usage.prompt_tokens == len(ids) + 2


def test_echo_prepends_the_prompt(client, tokenizer):
    reply = client.completions.create(model=MODEL, prompt="Echo me", max_tokens=3, echo=True, temperature=0.0)
    plain = client.completions.create(model=MODEL, prompt="Echo me", max_tokens=3, temperature=0.0)
    assert reply.choices[0].text == "Echo me" + plain.choices[0].text
    ids = tokenizer.encode("Echo me")
    assert client.completions.create(model=MODEL, prompt=ids, max_tokens=1, echo=True).choices[0].text.startswith("Echo me")


def test_logprobs_in_legacy_format(client):
    reply = client.completions.create(model=MODEL, prompt="Count: 1 2 3", max_tokens=4, logprobs=2, temperature=0.0,
                                      extra_body=EXACT)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 4
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert all(len(top) <= 2 and all(v <= 0 for v in top.values()) for top in logprobs.top_logprobs)
    assert logprobs.text_offset[0] == 0
    assert logprobs.text_offset[1:] == [logprobs.text_offset[i] + len(t) for i, t in enumerate(logprobs.tokens[:-1])]


def test_stream_with_usage_joins_to_the_full_text(client):
    kwargs = dict(model=MODEL, prompt=["A", "B"], max_tokens=5, temperature=0.0, extra_body=EXACT)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        texts[chunk.choices[0].index] += chunk.choices[0].text
    assert [texts[0], texts[1]] == [c.text for c in whole.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    finishes = [c.choices[0].finish_reason for c in chunks[:-1] if c.choices[0].finish_reason]
    assert finishes == ["length", "length"]
