"""`logit_bias` (OpenAI's: token ids as strings -> [-100, 100] added to the logits) and `reasoning_effort`
(Qwen3 thinks or not) over HTTP, through the openai package."""

from __future__ import annotations

import asyncio

from serverkit import MODEL

USER = [{"role": "user", "content": "What is the capital of France?"}]
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
EXACT = {"ignore_eos": True}


def test_a_plus_100_bias_forces_the_token_in_completions_and_chat(client, tokenizer):
    paris = tokenizer.encode(" Paris")[0]
    text = client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=1.0, seed=3,
                                     logit_bias={str(paris): 100}, extra_body=EXACT).choices[0].text
    assert text == tokenizer.decode([paris] * 4)
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=3, temperature=0.0,
                                           logit_bias={str(paris): 100.0}, extra_body={**NO_THINK, **EXACT})
    assert reply.choices[0].message.content == tokenizer.decode([paris] * 3)


def test_a_minus_100_bias_removes_the_greedy_token(client, tokenizer):
    kwargs = dict(model=MODEL, prompt="Hello", max_tokens=1, temperature=0.0, logprobs=1)
    first = client.completions.create(**kwargs).choices[0].logprobs.tokens[0]
    greedy = tokenizer.encode(first)[0]
    banned = client.completions.create(logit_bias={str(greedy): -100}, **kwargs).choices[0].logprobs.tokens[0]
    assert banned != first


def test_concurrent_requests_keep_their_own_bias(server, tokenizer):
    ids = [tokenizer.encode(word)[0] for word in (" red", " green", " blue")]

    async def run() -> list[str]:
        client = server.async_client()
        replies = await asyncio.gather(*(
            client.completions.create(model=MODEL, prompt="Colour:", max_tokens=4, temperature=0.0,
                                      logit_bias={str(token): 100} if token else None, extra_body=EXACT)
            for token in [*ids, None]))
        return [r.choices[0].text for r in replies]

    texts = asyncio.run(run())
    assert texts[:3] == [tokenizer.decode([token] * 4) for token in ids]
    assert texts[3] not in texts[:3]


def test_reasoning_effort_none_or_minimal_turns_thinking_off(server, client):
    for effort in ("none", "minimal"):
        message = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=6, reasoning_effort=effort,
                                                 extra_body=EXACT).choices[0].message
        assert message.content and message.model_extra.get("reasoning_content") is None


def test_reasoning_effort_low_to_high_keeps_thinking_on(client):
    for effort in ("low", "medium", "high"):
        message = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=6, reasoning_effort=effort,
                                                 extra_body=EXACT).choices[0].message
        assert message.content == "" and message.model_extra["reasoning_content"]  # a random model never closes it
