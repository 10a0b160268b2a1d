"""/v1/completions: prompt as text, list of texts, token ids and lists of them; echo; logprobs; streaming."""

from __future__ import annotations

import pytest
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


def test_streamed_logprobs_come_per_token_with_running_offsets(client):
    kwargs = dict(model=MODEL, prompt="Hello", max_tokens=6, logprobs=2, temperature=0.0)
    whole = client.completions.create(**kwargs).choices[0].logprobs
    chunks = [c for c in client.completions.create(stream=True, **kwargs) if c.choices and c.choices[0].logprobs]
    assert len(chunks) == 6
    tokens = [t for c in chunks for t in c.choices[0].logprobs.tokens]
    offsets = [o for c in chunks for o in c.choices[0].logprobs.text_offset]
    assert tokens == whole.tokens and offsets == whole.text_offset
    assert [round(v, 5) for c in chunks for v in c.choices[0].logprobs.token_logprobs] == [
        round(v, 5) for v in whole.token_logprobs]


def test_echo_with_logprobs_scores_the_prompt_like_transformers(server, client, tiny_model_dir):
    import torch
    import transformers

    prompt = "The quick brown fox jumps"
    ids = server.llm.get_tokenizer().encode(prompt)
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, logprobs=2, echo=True,
                                      temperature=0.0, extra_body={"ignore_eos": True})
    choice = reply.choices[0]
    lp = choice.logprobs
    assert choice.text.startswith(prompt)
    assert len(lp.tokens) == len(ids) + 3 and "".join(lp.tokens[: len(ids)]) == prompt
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    hf = transformers.Qwen3ForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].float()  # [T, V]
    logits[:, server.llm.get_tokenizer().vocab_size :] = float("-inf")  # embedding padding is no token
    reference = torch.log_softmax(logits, dim=-1)
    expected = [reference[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert lp.token_logprobs[1 : len(ids)] == pytest.approx(expected, abs=1e-4)
    for i in range(1, len(ids)):
        top = lp.top_logprobs[i]
        assert len(top) == 2 and max(top.values()) == pytest.approx(reference[i - 1].max().item(), abs=1e-4)
    assert lp.text_offset[: len(ids)] == [len("".join(lp.tokens[:i])) for i in range(len(ids))]
    assert lp.text_offset[len(ids)] == len(prompt)  # generated tokens continue after the echoed prompt
    assert all(v is not None for v in lp.token_logprobs[len(ids):])


def test_echo_with_logprobs_streamed(client):
    kwargs = dict(model=MODEL, prompt="Hello there", max_tokens=2, logprobs=1, echo=True, temperature=0.0)
    whole = client.completions.create(**kwargs).choices[0].logprobs
    chunks = [c for c in client.completions.create(stream=True, **kwargs) if c.choices and c.choices[0].logprobs]
    tokens = [t for c in chunks for t in c.choices[0].logprobs.tokens]
    values = [v for c in chunks for v in c.choices[0].logprobs.token_logprobs]
    assert tokens == whole.tokens
    assert values[0] is None and values[1:] == pytest.approx(whole.token_logprobs[1:], abs=1e-5)


def test_echo_with_logprobs_of_a_one_token_prompt(client):
    reply = client.completions.create(model=MODEL, prompt=[9707], max_tokens=1, logprobs=0, echo=True)
    lp = reply.choices[0].logprobs
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None and len(lp.tokens) == 2


def test_echo_with_logprobs_zero(client):
    """logprobs 0: each token's own logprob, no ranked alternatives; was a 500 (and an error event streamed)."""
    kwargs = dict(model=MODEL, prompt="Hello there friend", max_tokens=2, logprobs=0, echo=True, temperature=0.0)
    lp = client.completions.create(**kwargs).choices[0].logprobs
    assert lp.token_logprobs[0] is None and all(v is not None for v in lp.token_logprobs[1:])
    assert lp.top_logprobs[0] is None and all(top == {} for top in lp.top_logprobs[1:])
    chunks = [c for c in client.completions.create(stream=True, **kwargs) if c.choices and c.choices[0].logprobs]
    assert [t for c in chunks for t in c.choices[0].logprobs.tokens] == lp.tokens
    streamed = [v for c in chunks for v in c.choices[0].logprobs.token_logprobs]
    assert streamed[0] is None and streamed[1:] == pytest.approx(lp.token_logprobs[1:], abs=1e-5)
