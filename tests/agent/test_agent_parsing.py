"""Reading tool calls: strict hermes, and the repairs for what small models write when the grammar is off."""

from __future__ import annotations

from qwick.agent.parsing import parse_calls

KNOWN = {"add_event", "list_events"}


def test_strict_hermes_calls_and_content():
    text = ('Sure.\n<tool_call>\n{"name": "add_event", "arguments": {"title": "a"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "list_events", "arguments": {"day": "mon"}}\n</tool_call>')
    content, calls = parse_calls(text, KNOWN)
    assert content == "Sure."
    assert [(c.name, c.arguments, c.repaired) for c in calls] == [
        ("add_event", {"title": "a"}, None), ("list_events", {"day": "mon"}, None)]


def test_two_calls_glued_in_one_block():
    text = ('<tool_call>\n{"name": "add_event", "arguments": {"title": "a"}}{"name": "list_events", '
            '"arguments": {"day": "mon"}}\n</tool_call>')
    _, calls = parse_calls(text, KNOWN)
    assert [(c.name, c.arguments) for c in calls] == [("add_event", {"title": "a"}), ("list_events", {"day": "mon"})]
    assert calls[0].repaired == "several JSON objects in one <tool_call> block"


def test_the_wrapper_copied_into_the_arguments_is_removed():
    text = ('<tool_call>\n{"name": "add_event", "arguments": {"name": "add_event", "arguments": {"title": "a"}}}\n'
            '</tool_call>')
    _, calls = parse_calls(text, KNOWN)
    assert calls[0].arguments == {"title": "a"} and "wrapper" in calls[0].repaired


def test_arguments_as_a_json_string_and_parameters_for_arguments():
    _, calls = parse_calls('<tool_call>\n{"name": "add_event", "arguments": "{\\"title\\": \\"a\\"}"}\n</tool_call>')
    assert calls[0].arguments == {"title": "a"} and calls[0].repaired == "arguments given as a JSON string"
    _, calls = parse_calls('<tool_call>{"name": "add_event", "parameters": {"title": "a"}}')
    assert calls[0].arguments == {"title": "a"}


def test_a_bare_json_call_to_a_known_tool():
    content, calls = parse_calls('{"name": "list_events", "arguments": {"day": "mon"}}', KNOWN)
    assert content is None and calls[0].name == "list_events"
    content, calls = parse_calls('{"name": "rm_rf", "arguments": {}}', KNOWN)  # not a tool: just text
    assert calls == [] and content == '{"name": "rm_rf", "arguments": {}}'


def test_a_call_that_is_not_json_is_reported_not_dropped():
    content, calls = parse_calls("I will call it.<tool_call>\n{name: add_event}\n</tool_call>", KNOWN)
    assert content == "I will call it."
    assert len(calls) == 1 and calls[0].problem.startswith("the tool call is not valid JSON")


def test_strict_only_leaves_a_malformed_call_as_text():
    text = "<tool_call>\n{name: add_event}\n</tool_call>"
    assert parse_calls(text, KNOWN, tolerant=False) == (text, [])


def test_plain_text_is_the_answer():
    assert parse_calls("  The answer is 4.\n", KNOWN) == ("The answer is 4.", [])
