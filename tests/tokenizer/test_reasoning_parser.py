"""Qwen3 `<think>` parsing, whole and streamed; streamed pieces always join to the whole-text result."""

from __future__ import annotations

import random

import pytest

from qwick.tokenizer import ReasoningDelta, ReasoningStreamParser, parse_reasoning

OUTPUTS = [
    "<think>\nThe user asks 2+2.\n\nThat is 4.\n</think>\n\nThe answer is **4**.",
    "<think>\n\n</think>\n\nHi there!",
    "<think>\n思考中……😀\n</think>\n\n答案：四",
    "\nprompt already opened think\n</think>\n\nanswer\n",
    "<think>\nruns out of tokens mid-thought\n\n",
    "Plain answer with no think block.",
    "<think> \n </think>\n\nspaces inside the empty block",
    "<think>a</thinkX\n</think>b</think>c",
    "<think>\ncode: x < y and a</b>\n</think>\n\n\n\nfinal\n\n",
    "\n\n\n</think>",
    "<thi",
    "<think>",
    "",
]
MODES = {
    "thinking": dict(thinking_enabled=True),
    "no_thinking": dict(thinking_enabled=False),
    "prompt_opened": dict(thinking_enabled=True, prompt_opened_think=True),
    "no_thinking_but_prompt_opened": dict(thinking_enabled=False, prompt_opened_think=True),
}


def streamed(text: str, cuts: list[int], **mode) -> tuple[str | None, str | None]:
    parser = ReasoningStreamParser(**mode)
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    deltas = [parser.feed(piece) for piece in pieces] + [parser.finish()]
    reasoning = "".join(d.reasoning for d in deltas)
    content = "".join(d.content for d in deltas)
    return reasoning or None, content or None


def test_complete_thinking_output_is_split_at_the_end_tag():
    assert parse_reasoning(OUTPUTS[0]) == ("The user asks 2+2.\n\nThat is 4.", "The answer is **4**.")


def test_empty_think_block_gives_no_reasoning():
    assert parse_reasoning("<think>\n\n</think>\n\nHi there!") == (None, "Hi there!")


def test_truncated_thinking_is_all_reasoning():
    assert parse_reasoning("<think>\nruns out of tokens mid-thought\n\n") == ("runs out of tokens mid-thought", None)


def test_prompt_opened_think_output_starts_inside_the_thinking():
    text = "\nprompt already opened think\n</think>\n\nanswer\n"
    assert parse_reasoning(text, prompt_opened_think=True) == ("prompt already opened think", "answer\n")
    assert parse_reasoning(text, thinking_enabled=False, prompt_opened_think=True) == parse_reasoning(text)


def test_thinking_disabled_answer_is_content_never_reasoning():
    assert parse_reasoning("The answer is 4.", thinking_enabled=False) == (None, "The answer is 4.")
    # Even with tags in the answer: the prompt's empty think block already closed thinking.
    assert parse_reasoning("maybe </think> here", thinking_enabled=False) == (None, "maybe </think> here")


def test_thinking_disabled_drops_a_leading_empty_think_block():
    assert parse_reasoning("<think>\n\n</think>\n\nHello", thinking_enabled=False) == (None, "Hello")
    assert parse_reasoning("<think>\nnot empty\n</think>\n\nHello", thinking_enabled=False) == (
        None, "<think>\nnot empty\n</think>\n\nHello")


def test_empty_output_has_neither_part():
    assert parse_reasoning("") == (None, None)
    assert parse_reasoning("", thinking_enabled=False) == (None, None)


def test_stream_holds_back_partial_tags_and_trailing_newlines():
    parser = ReasoningStreamParser()
    assert parser.feed("<thi") == ReasoningDelta("", "")
    assert parser.feed("nk>\nstep one\n</th") == ReasoningDelta("step one", "")
    assert parser.feed("ink>\n\nAns") == ReasoningDelta("", "Ans")
    assert parser.feed("wer") == ReasoningDelta("", "wer")
    assert parser.finish() == ReasoningDelta("", "")


def test_stream_with_thinking_disabled_sends_everything_as_content():
    parser = ReasoningStreamParser(thinking_enabled=False)
    deltas = [parser.feed(piece) for piece in ("<think>", "\n\n", "</think>", "\n\nHel", "lo </think>")]
    deltas.append(parser.finish())
    assert all(d.reasoning == "" for d in deltas)
    assert "".join(d.content for d in deltas) == "Hello </think>"


def test_stream_truncated_thinking_flushes_reasoning_at_finish():
    parser = ReasoningStreamParser(prompt_opened_think=True)
    assert parser.feed("thinking...\n</thi") == ReasoningDelta("thinking...", "")
    assert parser.finish() == ReasoningDelta("\n</thi", "")


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("text", OUTPUTS, ids=range(len(OUTPUTS)))
def test_stream_matches_whole_text_at_every_split_point(text, mode):
    expected = parse_reasoning(text, **mode)
    for cut in range(len(text) + 1):
        assert streamed(text, [cut], **mode) == expected, cut
    assert streamed(text, list(range(1, len(text))), **mode) == expected


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_stream_matches_whole_text_for_random_splits(mode):
    rng = random.Random(0)
    for text in OUTPUTS:
        expected = parse_reasoning(text, **mode)
        for _ in range(60):
            cuts = sorted(rng.sample(range(len(text) + 1), rng.randint(0, min(len(text) + 1, 8))))
            assert streamed(text, cuts, **mode) == expected, cuts
