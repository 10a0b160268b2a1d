"""A locked-down server: API key (401), queue limit (503), body size (413) and message count (400)."""

from __future__ import annotations

import httpx
import openai
import pytest
from serverkit import MODEL, TIMEOUT, serving, tiny_llm, wait_until

from qwick.server import ServerLimits, build_app

KEY = "sk-test-key"
USER = [{"role": "user", "content": "Hi"}]
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def strict(tiny_model_dir):
    llm = tiny_llm(tiny_model_dir, max_num_seqs=1, max_model_len=512)
    limits = ServerLimits(max_queue=0, max_body_bytes=4096, max_messages=4)
    with serving(build_app(llm, MODEL, api_key=KEY, limits=limits, allowed_origins=["http://app.example"]),
                 llm) as running:
        yield running


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": "Bearer sk-test-k\u00e9".encode()}])
@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/tokenize"])
def test_a_missing_or_wrong_key_is_a_401(strict, headers, path):
    response = httpx.post(f"{strict.url}{path}", json={"messages": USER}, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_openai_client_with_the_right_key_works_and_with_a_wrong_one_is_refused(strict):
    assert strict.client(api_key=KEY).models.list().data[0].id == MODEL
    with pytest.raises(openai.AuthenticationError):
        strict.client(api_key="nope").models.list()


def test_health_and_metrics_stay_open(strict):
    assert strict.get("/health").status_code == 200
    assert strict.get("/metrics").status_code == 200


def test_cors_preflight_for_an_allowed_origin(strict):
    response = httpx.options(f"{strict.url}/v1/chat/completions", timeout=TIMEOUT, headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://app.example"


def test_a_body_over_the_limit_is_a_413(strict):
    response = strict.post("/v1/chat/completions", headers=AUTH,
                           json={"messages": [{"role": "user", "content": "x" * 5000}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    def chunked():
        yield b'{"messages": [{"role": "user", "content": "'
        yield b"y" * 5000
        yield b'"}]}'

    json_auth = {**AUTH, "content-type": "application/json"}
    assert strict.post("/v1/chat/completions", headers=json_auth, content=chunked()).status_code == 413


def test_too_many_messages_is_a_400(strict):
    response = strict.post("/v1/chat/completions", headers=AUTH, json={"messages": USER * 5})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"


def test_over_the_queue_limit_is_a_503_until_a_slot_frees(strict):
    client = strict.client(api_key=KEY)
    body = {"model": MODEL, "messages": USER, "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{strict.url}/v1/chat/completions", json=body, headers=AUTH,
                      timeout=TIMEOUT) as running:
        lines = running.iter_lines()  # keep it: a collected iterator would close the stream
        next(line for line in lines if line.startswith("data: "))
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)
        assert info.value.status_code == 503 and info.value.code == "overloaded"
        assert info.value.response.headers["retry-after"] == "1"

    def accepted() -> bool:
        response = strict.post("/v1/completions", headers=AUTH, json={"prompt": "Hi", "max_tokens": 1})
        return response.status_code == 200

    assert wait_until(accepted)
