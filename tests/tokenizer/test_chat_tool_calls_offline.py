"""LLM.chat(tools=...) parses hermes tool calls onto the output, as the server's chat endpoint does."""

from __future__ import annotations

import json

import pytest

from qwick import SamplingParams
from qwick.sampling_params import StructuredOutputsParams

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
USER = [{"role": "user", "content": "Weather in Paris?"}]
NO_THINK = {"enable_thinking": False}
# The random model is forced (by a grammar; <tool_call> is an added token) to write Qwen3's hermes format.
CALL = ('start: "Let me check.\\n" <tool_call> "\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": '
        '{\\"city\\": \\"" ("Paris" | "Rome") "\\"}}\\n" </tool_call>\n')


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    from server.serverkit import tiny_llm

    return tiny_llm(tiny_model_dir)


def test_chat_with_tools_fills_tool_calls(llm):
    params = SamplingParams(structured_outputs=StructuredOutputsParams(grammar=CALL), max_tokens=60, seed=0)
    out = llm.chat(USER, params, tools=TOOLS, chat_template_kwargs=NO_THINK)[0].outputs[0]
    assert "<tool_call>" in out.text
    (call,) = out.tool_calls
    assert call.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.arguments)["city"] in ("Paris", "Rome")
    assert out.content == "Let me check.\n"  # the text before the call stays content (vLLM's hermes rule)


def test_a_call_cut_by_max_tokens_is_neither_a_call_nor_markup_in_content(llm):
    params = SamplingParams(structured_outputs=StructuredOutputsParams(grammar=CALL), max_tokens=8, seed=0)
    out = llm.chat(USER, params, tools=TOOLS, chat_template_kwargs=NO_THINK)[0].outputs[0]
    assert out.finish_reason == "length" and "<tool_call>" in out.text
    assert out.tool_calls is None and "<tool_call>" not in (out.content or "")


def test_chat_without_a_call_leaves_tool_calls_empty(llm):
    params = SamplingParams(structured_outputs=StructuredOutputsParams(choice=["Sunny."]), max_tokens=10)
    out = llm.chat(USER, params, tools=TOOLS, chat_template_kwargs=NO_THINK)[0].outputs[0]
    assert out.tool_calls is None and out.content == "Sunny."


def test_chat_without_tools_does_not_parse_calls(llm):
    params = SamplingParams(structured_outputs=StructuredOutputsParams(grammar=CALL), max_tokens=60, seed=0)
    out = llm.chat(USER, params, chat_template_kwargs=NO_THINK)[0].outputs[0]
    assert out.tool_calls is None and "<tool_call>" in out.content
