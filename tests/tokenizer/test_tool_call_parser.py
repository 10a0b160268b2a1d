"""Hermes `<tool_call>` parsing (vLLM rules), whole and streamed; streams assemble to the whole-text result."""

from __future__ import annotations

import json
import random
import re

import pytest

from qwick.tokenizer import ToolCallStreamParser, parse_tool_calls

CALL_ID = re.compile(r"call_[0-9a-f]{24}")

WELL_FORMED = {
    "single": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    "content_then_two_calls": (
        'Let me check both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Rome", "fmt": null}}\n</tool_call>'),
    "compact_and_escaped_json": ('<tool_call>{"name":"search","arguments":{"q":"caf\\u00e9 \\ud83d\\ude00 \\"x\\"\\n",'
                                 '"n":[1,2.50,1e3,-0,true,false],"nested":{"a":{}}}}</tool_call>'),
    "arguments_before_name": '<tool_call>\n{"arguments": {"x": [1, {"y": "z"}]}, "name": "f"}\n</tool_call>',
    "non_ascii_and_empty_arguments": '<tool_call>\n{"name": "查询", "arguments": {}}\n</tool_call>\n',
    "string_arguments": '<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>',
    "unterminated_last_call": '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n<tool_call>\n'
                              '{"name": "g", "arguments": {"b": "</tool_"}}\n',
    "text_after_calls_is_dropped": '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\nDone!',
    "no_tool_call": "Just an answer, mentioning <tool_ and tool_call> but no tag.",
    "almost_a_tag_at_the_end": "Partial tag at the end <tool_call",
}
MALFORMED = {
    "not_json": "<tool_call>\nI will call get_weather\n</tool_call>",
    "missing_arguments": '<tool_call>\n{"name": "f"}\n</tool_call>',
    "missing_name": '<tool_call>\n{"arguments": {}}\n</tool_call>',
    "name_not_a_string": '<tool_call>\n{"name": 3, "arguments": {}}\n</tool_call>',
    "not_an_object": '<tool_call>\n["f", {}]\n</tool_call>',
    "second_call_broken": '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": </tool_call>',
    "empty_body": "Text <tool_call></tool_call>",
}


def streamed(text: str, cuts: list[int], whole_calls: bool = False,
             cut: bool = False) -> tuple[str | None, list[tuple[str, str]]]:
    """Feed text split at `cuts`, assemble the OpenAI-style pieces like a client would."""
    parser = ToolCallStreamParser(whole_calls=whole_calls)
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    deltas = [parser.feed(piece) for piece in pieces] + [parser.finish(cut)]
    assert parser.cut == parse_tool_calls(text, cut=cut).cut
    calls: list[dict] = []
    for delta in deltas:
        for piece in delta.tool_calls:
            if piece.index == len(calls):
                assert piece.name is not None and CALL_ID.fullmatch(piece.id)  # first piece names the call
                calls.append({"name": piece.name, "arguments": ""})
            else:
                assert piece.id is None and piece.name is None and piece.index == len(calls) - 1
            calls[piece.index]["arguments"] += piece.arguments
    content = "".join(delta.content for delta in deltas)
    return content or None, [(c["name"], c["arguments"]) for c in calls]


def whole(text: str) -> tuple[str | None, list[tuple[str, str]]]:
    result = parse_tool_calls(text)
    return result.content, [(call.name, call.arguments) for call in result.tool_calls]


def test_single_call():
    result = parse_tool_calls(WELL_FORMED["single"])
    assert result.content is None
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_content_before_calls_and_several_calls():
    assert whole(WELL_FORMED["content_then_two_calls"]) == ("Let me check both.\n", [
        ("get_weather", '{"city": "Paris", "days": 3}'), ("get_time", '{"tz": "Europe/Rome", "fmt": null}')])


def test_arguments_are_reserialised_like_json_dumps_without_ascii_escapes():
    ((name, arguments),) = whole(WELL_FORMED["compact_and_escaped_json"])[1]
    assert name == "search"
    assert arguments == '{"q": "café 😀 \\"x\\"\\n", "n": [1, 2.5, 1000.0, 0, true, false], "nested": {"a": {}}}'


def test_unterminated_final_call_is_parsed():
    assert whole(WELL_FORMED["unterminated_last_call"])[1] == [("f", '{"a": 1}'), ("g", '{"b": "</tool_"}')]


def test_text_after_the_calls_is_dropped():
    assert whole(WELL_FORMED["text_after_calls_is_dropped"]) == (None, [("f", "{}")])


def test_output_without_tool_call_is_all_content():
    text = WELL_FORMED["no_tool_call"]
    assert whole(text) == (text, [])
    assert whole("") == (None, [])


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_call_gives_no_calls_and_the_whole_text_as_content(text):
    assert whole(text) == (text, [])


def test_each_call_gets_a_fresh_openai_style_id():
    calls = parse_tool_calls(WELL_FORMED["content_then_two_calls"]).tool_calls
    assert all(CALL_ID.fullmatch(call.id) for call in calls)
    assert calls[0].id != calls[1].id


def test_stream_holds_back_a_possible_tag_then_sends_name_then_arguments():
    parser = ToolCallStreamParser()
    assert parser.feed("Sure. <tool").content == "Sure. "
    delta = parser.feed('_call>\n{"name": "get_wea')
    assert (delta.content, delta.tool_calls) == ("", [])
    first, = parser.feed('ther", "arguments": {"city": "Pa').tool_calls
    assert (first.index, first.name, first.arguments) == (0, "get_weather", '{"city": "Pa')
    second, = parser.feed('ris"}}\n</tool_call>').tool_calls
    assert (second.index, second.id, second.name, second.arguments) == (0, None, None, 'ris"}')


def test_stream_falls_back_to_content_when_the_first_call_is_not_json():
    text = MALFORMED["not_json"]
    assert streamed(text, [15]) == (text, [])


@pytest.mark.parametrize("text", WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_stream_matches_whole_text_at_every_split_point(text):
    expected = whole(text)
    for cut in range(len(text) + 1):
        assert streamed(text, [cut]) == expected, cut
    assert streamed(text, list(range(1, len(text)))) == expected


@pytest.mark.parametrize("text", WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_stream_matches_whole_text_for_random_splits(text):
    rng = random.Random(text)
    for _ in range(40):
        cuts = sorted(rng.sample(range(len(text) + 1), rng.randint(0, min(len(text) + 1, 10))))
        assert streamed(text, cuts) == whole(text), cuts


@pytest.mark.parametrize("name", ["not_json", "not_an_object", "empty_body", "missing_name"])
def test_stream_matches_whole_text_when_the_first_call_never_names_a_function(name):
    text = MALFORMED[name]
    for cut in range(len(text) + 1):
        assert streamed(text, [cut]) == whole(text), cut


TWO_CALLS = WELL_FORMED["content_then_two_calls"]


@pytest.mark.parametrize("end", range(TWO_CALLS.index("<tool_call>") + len("<tool_call>"), len(TWO_CALLS) + 1))
def test_an_output_cut_inside_a_call_keeps_the_finished_calls_and_no_markup(end):
    text = TWO_CALLS[:end]
    result = parse_tool_calls(text, cut=True)
    assert result.content == "Let me check both.\n" and "<tool_call>" not in (result.content or "")
    full = [(c.name, c.arguments) for c in parse_tool_calls(TWO_CALLS).tool_calls]
    calls = [(c.name, c.arguments) for c in result.tool_calls]
    assert calls == full[:len(calls)] and all(json.loads(arguments) is not None for _, arguments in calls)
    assert result.cut == (len(calls) < text.count("<tool_call>"))  # only an unfinished last call is left out


@pytest.mark.parametrize("end", range(TWO_CALLS.index("<tool_call>") + len("<tool_call>"), len(TWO_CALLS) + 1))
def test_whole_call_streams_agree_with_the_cut_output_at_every_length(end):
    text = TWO_CALLS[:end]
    expected = whole_cut(text)
    rng = random.Random(end)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12))))
        assert streamed(text, cuts, whole_calls=True, cut=True) == expected
    assert streamed(text, list(range(1, len(text))), whole_calls=True, cut=True) == expected


def test_a_cut_body_that_is_not_json_is_malformed_not_cut():
    text = '<tool_call>\n{"name": "f", "arguments": {"a": ]'
    result = parse_tool_calls(text, cut=True)
    assert not result.cut and result.tool_calls == [] and result.content == text


def whole_cut(text: str) -> tuple[str | None, list[tuple[str, str]]]:
    result = parse_tool_calls(text, cut=True)
    return result.content, [(call.name, call.arguments) for call in result.tool_calls]
