"""Streaming deltas, chat rendering, reasoning split and the thinking budget."""

from __future__ import annotations

import pytest

from qwick import SamplingParams

THINK, END_THINK = 151667, 151668


@pytest.mark.parametrize("prompt", ["你好，世界", "Emoji: 👩‍👩‍👧 🇫🇷", "def f(x):\n    return x"])
def test_stream_deltas_concatenate_to_the_final_text(llm, prompt):
    params = SamplingParams(max_tokens=40, temperature=1.0, seed=9, ignore_eos=True)
    deltas = list(llm.stream(prompt, params))
    final = llm.generate(prompt, params)[0].outputs[0]
    assert "".join(d.text for d in deltas) == final.text
    assert [t for d in deltas for t in d.token_ids] == final.token_ids
    assert deltas[-1].finish_reason == "length"
    assert all(d.finish_reason is None for d in deltas[:-1])


def test_stream_never_emits_a_stop_string_or_its_prefix(llm):
    base = llm.generate("Once upon a time", SamplingParams(max_tokens=20, temperature=0.0))[0].outputs[0]
    stop = base.text[6:10]
    deltas = list(llm.stream("Once upon a time", SamplingParams(max_tokens=20, temperature=0.0, stop=stop)))
    assert "".join(d.text for d in deltas) == base.text[: base.text.find(stop)]


def test_streams_split_utf8_only_at_character_boundaries(llm):
    # byte-level tokens of emoji/CJK: no delta may carry a replacement character unless the text has one
    params = SamplingParams(max_tokens=60, temperature=1.0, seed=4, ignore_eos=True)
    deltas = [d.text for d in llm.stream("🙂🙂 中文", params)]
    text = "".join(deltas)
    assert sum(d.count("\ufffd") for d in deltas) == text.count("\ufffd")


def test_chat_renders_with_the_model_template(llm):
    messages = [{"role": "user", "content": "Hi"}]
    prompt = llm.render_chat(messages, chat_template_kwargs={"enable_thinking": False})
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    out = llm.chat(messages, SamplingParams(max_tokens=4, temperature=0.0),
                   chat_template_kwargs={"enable_thinking": False})[0]
    assert out.prompt_token_ids == llm.get_tokenizer().encode(prompt)


def test_chat_with_thinking_disabled_puts_everything_in_content(llm):
    out = llm.chat([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=12, temperature=0.0,
                                                                      ignore_eos=True),
                   chat_template_kwargs={"enable_thinking": False})[0].outputs[0]
    assert out.reasoning_content is None
    assert out.content == out.text


def test_chat_accepts_a_list_of_conversations(llm):
    outs = llm.chat([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
                    SamplingParams(max_tokens=2, temperature=0.0))
    assert len(outs) == 2


def test_stream_chat_splits_reasoning_from_content(llm):
    messages = [{"role": "user", "content": "Hi"}]
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    deltas = list(llm.stream_chat(messages, params, chat_template_kwargs={"enable_thinking": False}))
    assert "".join(d.reasoning_content for d in deltas) == ""
    assert "".join(d.content for d in deltas) == "".join(d.text for d in deltas).lstrip("\n")


def test_thinking_budget_closes_the_block_and_the_answer_follows(llm):
    tok = llm.get_tokenizer()
    prompt = tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n")
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, max_thinking_tokens=5)
    out = llm.generate({"prompt_token_ids": prompt}, params)[0].outputs[0]
    closing = tok.encode("\n</think>\n\n")
    assert END_THINK not in out.token_ids[:5]
    assert out.token_ids[5 : 5 + len(closing)] == closing
    assert len(out.token_ids) == 20  # the answer goes on after the block


def test_zero_thinking_budget_closes_an_opened_block_at_once(llm):
    tok = llm.get_tokenizer()
    prompt = tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>")
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, max_thinking_tokens=0))[0]
    assert out.outputs[0].token_ids[:3] == tok.encode("\n</think>\n\n")


def test_chat_renders_tools_into_the_system_turn(llm):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                               "parameters": {"type": "object", "properties": {}}}}]
    out = llm.chat([{"role": "user", "content": "Weather?"}], SamplingParams(max_tokens=2, temperature=0.0),
                   tools=tools)[0]
    prompt = llm.get_tokenizer().decode(out.prompt_token_ids)
    assert prompt == llm.get_tokenizer().apply_chat_template([{"role": "user", "content": "Weather?"}], tools=tools)
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt


def test_stream_returns_as_soon_as_its_own_request_is_done(llm):
    llm.engine.add_request("other", [5, 6, 7], SamplingParams(max_tokens=50, ignore_eos=True))
    try:
        deltas = list(llm.stream("hi", SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)))
        assert deltas[-1].finish_reason == "length"
        assert "other" in llm.engine.requests  # not run to completion on our behalf
    finally:
        llm.engine.abort("other")
