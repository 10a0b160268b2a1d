"""The loss mask: exactly the assistant's tokens of the rendered chat template are learned."""

from __future__ import annotations

import pytest

from qwick.train.data import DEFAULT_GATE_TEMPLATE, ChatRow, TextRow, gate_messages
from qwick.train.render import IGNORE, Example, truncate


def learned_runs(example: Example, tokenizer) -> list[str]:
    """The text of each maximal run of learned tokens, in order."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE:
            assert label == token  # labels are the tokens themselves; the shift happens in the loss
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return [*runs, tokenizer.decode(current)] if current else runs


MULTI_TURN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris.", "reasoning_content": "Easy geography."},
    {"role": "user", "content": "And 6 times 7?"},
    {"role": "assistant", "content": "42.", "reasoning_content": "6*7 is 42."},
]


def test_multi_turn_learns_each_assistant_turn_and_the_last_reasoning(renderer, tokenizer):
    example = renderer(ChatRow(MULTI_TURN))
    rendered = tokenizer.apply_chat_template(MULTI_TURN, add_generation_prompt=False)
    assert tokenizer.decode(example.input_ids) == rendered
    assert example.input_ids == tokenizer.encode(rendered)
    assert learned_runs(example, tokenizer) == [
        "Paris.<|im_end|>",  # earlier turn: the template dropped its reasoning
        "<think>\n6*7 is 42.\n</think>\n\n42.<|im_end|>",  # last turn: reasoning is learned
    ]
    assert "Easy geography" not in rendered


def test_everything_but_the_assistant_text_is_context(renderer, tokenizer):
    example = renderer(ChatRow(MULTI_TURN))
    context = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels, strict=True) if label == IGNORE])
    assert context == ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
                       "<|im_start|>assistant\n\n<|im_start|>user\nAnd 6 times 7?<|im_end|>\n"
                       "<|im_start|>assistant\n\n")


def test_empty_think_block_of_an_answer_without_reasoning_is_context(renderer, tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    example = renderer(ChatRow(messages))
    assert tokenizer.decode(example.input_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n")
    assert learned_runs(example, tokenizer) == ["Hello!<|im_end|>"]


def test_tool_calls_are_learned_and_tool_results_are_context(renderer, tokenizer):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "-3 C"},
        {"role": "assistant", "content": "It is -3 C."},
    ]
    example = renderer(ChatRow(messages, tools))
    assert learned_runs(example, tokenizer) == [
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>',
        "It is -3 C.<|im_end|>",
    ]
    assert "<tool_response>\n-3 C\n</tool_response>" in tokenizer.decode(example.input_ids)


def test_cut_off_answer_does_not_learn_the_end_of_turn(renderer, tokenizer):
    example = renderer(ChatRow([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}],
                                          complete=False))
    assert learned_runs(example, tokenizer) == ["Hel"]


def test_prompt_completion_learns_the_completion_and_eos(renderer, tokenizer):
    example = renderer(TextRow("Q: 2+2?\nA:", " 4"))
    assert example.input_ids == tokenizer.encode("Q: 2+2?\nA:") + tokenizer.encode(" 4") + [tokenizer.eos_token_id]
    assert learned_runs(example, tokenizer) == [" 4<|im_end|>"]


def test_gate_rows_become_a_chat_through_the_template():
    assert gate_messages("buy cheap pills", "spam", "Is this spam? {text}") == [
        {"role": "user", "content": "Is this spam? buy cheap pills"}, {"role": "assistant", "content": "spam"}]
    assert gate_messages("x {y}", None)[0]["content"] == DEFAULT_GATE_TEMPLATE.replace("{text}", "x {y}")
    with pytest.raises(ValueError, match=r"\{text\}"):
        gate_messages("x", "y", "no placeholder")


def test_truncate_keeps_the_start_and_drops_rows_with_nothing_learned():
    example = Example([1, 2, 3, 4, 5], [IGNORE, IGNORE, IGNORE, 4, 5])
    assert truncate(example, 5) is example
    assert truncate(example, 4) == Example([1, 2, 3, 4], [IGNORE, IGNORE, IGNORE, 4])
    assert truncate(example, 3) is None
