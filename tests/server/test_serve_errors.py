"""Every client mistake is a 4xx in OpenAI's one error shape, naming the field; a server failure is a logged 500."""

from __future__ import annotations

import logging

import openai
import pytest
from serverkit import MAX_MODEL_LEN, MODEL

USER = [{"role": "user", "content": "Hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(("fields", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": None}, "messages"),
    ({"messages": [{"role": "bob", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"presence_penalty": 5}, "presence_penalty"),
    ({"n": 0}, "n"),
    ({"seed": "abc"}, "seed"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": -3}, "max_completion_tokens"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({"top_k": -5}, "top_k"),
    ({"min_tokens": 10, "max_tokens": 5}, "min_tokens"),
    ({"max_thinking_tokens": -1}, "max_thinking_tokens"),
    ({"stop": 5}, "stop"),
    ({"stop": ["ok", 3]}, "stop"),
    ({"n": 1.5}, "n"),
    ({"seed": 1.5}, "seed"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"logprobs": True, "top_logprobs": 0.5}, "top_logprobs"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
     "response_format"),
    ({"guided_regex": "(unclosed"}, "guided_regex"),
    ({"guided_json": {"type": "array", "uniqueItems": True}}, "guided_json"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_grammar": "start: nowhere"}, "guided_grammar"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
    ({"structured_outputs": {"xml": "<a/>"}}, "structured_outputs"),
    ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "required", "guided_regex": "a"}, "guided_regex"),
    ({"logit_bias": {"abc": 5}}, "logit_bias"),
    ({"logit_bias": {"-1": 5}}, "logit_bias"),
    ({"logit_bias": {"999999999": 5}}, "logit_bias"),
    ({"logit_bias": {"1": 100.5}}, "logit_bias"),
    ({"logit_bias": {"1": "high"}}, "logit_bias.1"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": False}}, "reasoning_effort"),
    ({"function_call": "auto"}, "function_call"),
    ({"functions": [{"name": "f"}], "function_call": {"nam": "f"}}, "function_call"),
    ({"functions": [{"name": "f"}], "function_call": {"name": "g"}}, "function_call"),
    ({"functions": [{"name": "f"}], "tools": TOOLS}, "functions"),
    ({"chat_template_kwargs": {"tools": []}}, "chat_template_kwargs"),
])
def test_invalid_chat_field_is_a_400_naming_it(server, fields, param):
    body = {"model": MODEL, "messages": USER, "max_tokens": 2, **fields}
    response = server.post("/v1/chat/completions", json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400, response.text
    assert error(response)["param"] == param and error(response)["type"] == "invalid_request_error"


@pytest.mark.parametrize(("fields", "param"), [
    ({"prompt": None}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"n": 2.5}, "n"),
    ({"logprobs": 1.5}, "logprobs"),
    ({"echo": 1.0}, "echo"),
    ({"logit_bias": {"151936": 1}}, "logit_bias"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": [10**7]}, "prompt"),
    ({"prompt": ["a", 1]}, "prompt"),
    ({"logprobs": 50}, "logprobs"),
    ({"suffix": "x"}, "suffix"),
])
def test_invalid_completion_field_is_a_400_naming_it(server, fields, param):
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 2, **fields}
    response = server.post("/v1/completions", json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400, response.text
    assert error(response)["param"] == param


def test_the_openai_client_sees_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=USER, temperature=-2)
    assert info.value.status_code == 400 and info.value.param == "temperature"
    assert "temperature" in info.value.message and info.value.type == "invalid_request_error"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/tokenize"])
def test_unknown_model_is_a_404(server, path):
    body = {"model": "gpt-5", "messages": USER, "prompt": "Hi", "max_tokens": 1}
    response = server.post(path, json=body)
    assert response.status_code == 404
    assert error(response)["param"] == "model" and error(response)["code"] == "model_not_found"


def test_the_openai_client_sees_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="Hi", max_tokens=1)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"", b'"text"', b"\xff\xfe"])
def test_malformed_bodies_are_a_400(server, content):
    response = server.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error(response)["type"] == "invalid_request_error"


def test_prompt_plus_max_tokens_over_the_context_is_a_400_with_both_numbers(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="Hello there", max_tokens=MAX_MODEL_LEN)
    assert info.value.code == "context_length_exceeded" and info.value.param == "max_tokens"
    assert str(MAX_MODEL_LEN) in info.value.message and f"{MAX_MODEL_LEN + 2} tokens (2 in the prompt" in info.value.message


def test_a_prompt_over_the_context_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * MAX_MODEL_LEN}])
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt=[1] * MAX_MODEL_LEN, max_tokens=1)
    assert info.value.param == "prompt" and str(MAX_MODEL_LEN) in info.value.message


def test_unknown_routes_and_methods_use_the_error_shape(server):
    assert error(server.post("/v1/nothing-here", json={}))["message"].startswith("Not Found")
    response = server.get("/v1/chat/completions")
    assert response.status_code == 405 and error(response)["type"] == "invalid_request_error"


def test_tokenize_and_detokenize_validate(server):
    assert error(server.post("/tokenize", json={}))["param"] == "prompt"
    assert error(server.post("/detokenize", json={"tokens": [10**9]}))["param"] == "tokens"
    assert error(server.post("/detokenize", json={"tokens": "abc"}))["param"] == "tokens"


@pytest.mark.parametrize("stream", [False, True])
def test_an_engine_failure_is_a_logged_500(server, monkeypatch, caplog, stream):
    def broken_step():
        raise RuntimeError("simulated engine failure")

    monkeypatch.setattr(server.llm.engine, "step", broken_step)
    with caplog.at_level(logging.ERROR, logger="qwick"):
        response = server.post("/v1/chat/completions", headers={"X-Request-Id": "trace-500"},
                               json={"model": MODEL, "messages": USER, "max_tokens": 2, "stream": stream})
    assert response.status_code == 500
    assert error(response)["type"] == "server_error" and "trace-500" in error(response)["message"]
    assert any("trace-500" in record.getMessage() for record in caplog.records if record.name == "qwick.server")
    monkeypatch.undo()
    assert server.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1}).status_code == 200
