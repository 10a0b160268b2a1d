"""LLM.chat and POST /v1/chat/completions split an output into reasoning and answer the same way (one function)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from qwick import SamplingParams
from qwick.sampling_params import StructuredOutputsParams
from qwick.server import build_app
from qwick.server.app import start_llm

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"],
          "additionalProperties": False}
USER = [{"role": "user", "content": "Name a city as JSON."}]


@pytest.fixture(scope="module")
def served(tiny_model_dir) -> Iterator:
    from server.serverkit import serving, tiny_llm

    llm, engine = start_llm(lambda: tiny_llm(tiny_model_dir))
    with serving(build_app(llm, "tiny", client=engine), llm) as running:
        yield running


@pytest.fixture(scope="module")
def offline(tiny_model_dir):
    from server.serverkit import tiny_llm

    return tiny_llm(tiny_model_dir)


@pytest.mark.parametrize("seed", [2, 0, 1, 3])
def test_structured_chat_answer_is_content_offline_and_over_http(offline, served, seed):
    """The issue's request: offline put the JSON in reasoning_content (content=None); the server in content."""
    params = SamplingParams(structured_outputs=StructuredOutputsParams(json=SCHEMA), max_thinking_tokens=8,
                            max_tokens=64, seed=seed)
    out = offline.chat(USER, params)[0].outputs[0]
    reply = served.post("/v1/chat/completions", json={
        "model": "tiny", "messages": USER, "seed": seed, "max_tokens": 64, "max_thinking_tokens": 8,
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}}).json()
    message = reply["choices"][0]["message"]
    assert (out.reasoning_content, out.content) == (message.get("reasoning_content"), message["content"] or None)
    if out.finish_reason == "stop":
        assert json.loads(out.content)["city"] is not None
    if not out.text.startswith("<think>"):  # no think block opened: all of it is the answer
        assert out.reasoning_content is None and out.content == out.text


@pytest.mark.parametrize("seed", [2, 0])
def test_stream_chat_splits_like_chat(offline, seed):
    params = SamplingParams(structured_outputs=StructuredOutputsParams(json=SCHEMA), max_thinking_tokens=8,
                            max_tokens=64, seed=seed)
    whole = offline.chat(USER, params)[0].outputs[0]
    deltas = list(offline.stream_chat(USER, params))
    assert "".join(d.reasoning_content for d in deltas) == (whole.reasoning_content or "")
    assert "".join(d.content for d in deltas) == (whole.content or "")
