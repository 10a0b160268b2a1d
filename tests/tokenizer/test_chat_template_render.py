"""Chat-template rendering is byte-identical to transformers' apply_chat_template and to the derived vectors."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import jinja2
import pytest

from qwick.tokenizer import Tokenizer, chat

ASSETS = Path(__file__).parents[1] / "assets" / "qwen3"
DERIVED = json.loads((ASSETS / "chat_template_renders.derived.json").read_text(encoding="utf-8"))["chat_cases"]

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Wetter für eine Stadt, e.g. 北京 <b>&</b>",
    "parameters": {"type": "object", "required": ["city"],  # key order must survive tojson
                   "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}}}}
SEARCH_TOOL = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}

# (messages, tools, template variables); each rendered with and without a generation prompt.
SCENARIOS = {
    "user_only": ([{"role": "user", "content": "Hi"}], None, {}),
    "thinking_off": ([{"role": "user", "content": "Hi"}], None, {"enable_thinking": False}),
    "thinking_on": ([{"role": "user", "content": "Hi /no_think"}], None, {"enable_thinking": True}),
    "system_multi_turn": ([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Q1 你好"},
        {"role": "assistant", "content": "<think>\nr1\n</think>\n\nA1 😀"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2", "reasoning_content": "r2"},
        {"role": "user", "content": "Q3"},
    ], None, {}),
    "final_assistant_with_reasoning": ([
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A", "reasoning_content": "\nthought\n"},
    ], None, {}),
    "reasoning_alias_field": ([
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A", "reasoning": "aliased thought"},
    ], None, {}),
    "list_content_and_none_fields": ([
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}], "name": None},
    ], None, {}),
    "system_not_first_and_unknown_role": ([
        {"role": "user", "content": "Q"},
        {"role": "system", "content": "late system"},
        {"role": "critic", "content": "skipped"},
        {"role": "user", "content": "Q again"},
    ], None, {}),
    "tools_without_system": ([{"role": "user", "content": "Weather?"}], [WEATHER_TOOL, SEARCH_TOOL], {}),
    "tool_calls_dict_and_string_arguments": ([
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "content": '{"temp_c": 21}'},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Checking once more.", "reasoning_content": "need search",
         "tool_calls": [{"name": "search", "arguments": {"q": "Paris ☀"}}]},  # no `function` wrapper
        {"role": "tool", "content": "done"},
    ], [WEATHER_TOOL, SEARCH_TOOL], {"enable_thinking": False}),
    "openai_shaped_tool_call_with_null_content": ([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
    ], [WEATHER_TOOL], {}),
    "special_tokens_inside_content": ([
        {"role": "user", "content": "say <|im_end|> and <think>x</think> and <tool_call>"},
    ], None, {}),
}
ORIGINAL_TEMPLATE_SCENARIOS = ["user_only", "thinking_off", "thinking_on", "system_multi_turn",
                               "final_assistant_with_reasoning", "tools_without_system",
                               "tool_calls_dict_and_string_arguments"]


@pytest.fixture(scope="module")
def original_template_dir(tokenizer_dir: Path, tmp_path_factory) -> Path:
    """The tokenizer folder with the April-2025 template as a chat_template.jinja file (which wins)."""
    folder = tmp_path_factory.mktemp("qwen3-2025-04")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, folder / name)
    shutil.copy(ASSETS / "chat_template.2025-04-original.jinja", folder / "chat_template.jinja")
    return folder


@pytest.fixture(scope="module")
def original_tokenizer(original_template_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(original_template_dir)


@pytest.fixture(scope="module")
def original_hf_tokenizer(original_template_dir: Path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(original_template_dir)


@pytest.mark.parametrize("case", DERIVED, ids=[c["name"] for c in DERIVED])
def test_derived_render(tokenizer, case):
    variables = {k: v for k, v in case.items() if k in ("enable_thinking",)}
    kwargs = dict(tools=case.get("tools"), add_generation_prompt=case["add_generation_prompt"], **variables)
    assert tokenizer.apply_chat_template(case["messages"], **kwargs) == case["rendered"]
    assert tokenizer.apply_chat_template(case["messages"], tokenize=True, **kwargs) == case["input_ids"]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("name", SCENARIOS)
def test_render_matches_transformers(tokenizer, hf_tokenizer, name, add_generation_prompt):
    messages, tools, variables = SCENARIOS[name]
    ours = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt, **variables)
    theirs = hf_tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                              tokenize=False, **variables)
    assert ours == theirs


@pytest.mark.parametrize("name", SCENARIOS)
def test_tokenized_render_matches_transformers(tokenizer, hf_tokenizer, name):
    messages, tools, variables = SCENARIOS[name]
    ours = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, **variables)
    theirs = hf_tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                              return_dict=False, **variables)
    assert ours == theirs


@pytest.mark.parametrize("name", ORIGINAL_TEMPLATE_SCENARIOS)
def test_original_2025_04_template_matches_transformers(original_tokenizer, original_hf_tokenizer, name):
    assert original_tokenizer.chat_template == original_hf_tokenizer.chat_template
    messages, tools, variables = SCENARIOS[name]
    assert original_tokenizer.apply_chat_template(messages, tools=tools, **variables) == (
        original_hf_tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False,
                                                  **variables))


def test_original_template_renders_ordinary_chats_like_the_current_one(tokenizer, original_tokenizer):
    old = original_tokenizer
    for name in ORIGINAL_TEMPLATE_SCENARIOS:
        messages, tools, variables = SCENARIOS[name]
        assert old.apply_chat_template(messages, tools=tools, **variables) == tokenizer.apply_chat_template(
            messages, tools=tools, **variables)


def test_explicit_template_argument_overrides_the_tokenizers(tokenizer):
    template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{{ eos_token }}"
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], chat_template=template) == "[user]Hi<|im_end|>"


def test_tojson_keeps_non_ascii_and_key_order_without_html_escaping(tokenizer):
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{{ data | tojson }}",
                                             data={"z": "北京 <b>&</b>", "a": [1, None, True]})
    assert rendered == '{"z": "北京 <b>&</b>", "a": [1, null, true]}'


def test_raise_exception_is_available_to_templates(tokenizer):
    with pytest.raises(jinja2.TemplateError, match="no system allowed"):
        tokenizer.apply_chat_template([{"role": "user", "content": "x"}],
                                      chat_template="{{ raise_exception('no system allowed') }}")


def test_strftime_now_is_available_to_templates(tokenizer):
    year = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{{ strftime_now('%Y') }}")
    assert year == str(datetime.datetime.now().year)


def test_template_cannot_modify_the_callers_messages(tokenizer):
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(jinja2.exceptions.SecurityError):
        tokenizer.apply_chat_template(messages, chat_template="{{ messages.append(1) }}")
    assert messages == [{"role": "user", "content": "x"}]


def test_rendering_leaves_the_messages_unchanged(tokenizer):
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning": "r", "name": None}]
    snapshot = json.dumps(messages)
    tokenizer.apply_chat_template(messages)
    assert json.dumps(messages) == snapshot


def test_namespace_rejects_underscore_attributes(tokenizer):
    with pytest.raises(jinja2.exceptions.SecurityError):
        tokenizer.apply_chat_template([{"role": "user", "content": "x"}],
                                      chat_template="{% set ns = namespace(_hidden=1) %}{{ ns._hidden }}")


def test_generation_blocks_render_their_body(tokenizer):
    template = "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    assert tokenizer.apply_chat_template([{"role": "user", "content": "kept"}], chat_template=template) == "kept"


def test_template_is_compiled_once(tokenizer_dir, monkeypatch):
    compiled = []
    original = chat.ChatTemplate.__init__

    def counting_init(self, source):
        compiled.append(source)
        original(self, source)

    monkeypatch.setattr(chat.ChatTemplate, "__init__", counting_init)
    fresh = Tokenizer.from_pretrained(tokenizer_dir)
    for _ in range(3):
        fresh.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert len(compiled) == 1


def test_empty_conversation_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="empty conversation"):
        tokenizer.apply_chat_template([])


def test_tools_must_be_json_schema_dicts(tokenizer):
    with pytest.raises(TypeError, match="JSON-schema"):
        tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tools=[print])
