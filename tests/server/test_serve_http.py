"""What every request passes first (guard.py): API-key scheme, JSON content type, and clients hanging up."""

from __future__ import annotations

import logging
import socket

import pytest
from serverkit import MODEL, TIMEOUT, serving, tiny_llm, wait_until

from qwick.server import build_app

KEY = "sk-http"


@pytest.fixture(scope="module")
def keyed(tiny_model_dir):
    llm = tiny_llm(tiny_model_dir)
    with serving(build_app(llm, MODEL, api_key=KEY), llm) as running:
        yield running


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_bearer_scheme_is_case_insensitive(keyed, scheme):
    response = keyed.post("/tokenize", json={"prompt": "Hi"}, headers={"Authorization": f"{scheme} {KEY}"})
    assert response.status_code == 200 and response.json()["count"] >= 1


@pytest.mark.parametrize("header", [f"Basic {KEY}", KEY, "bearer wrong", "bearer"])
def test_a_wrong_scheme_or_key_is_a_401(keyed, header):
    response = keyed.post("/tokenize", json={"prompt": "Hi"}, headers={"Authorization": header})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_a_post_that_is_not_json_is_refused_with_415_and_not_run(server, content_type):
    headers = {"content-type": content_type} if content_type else {}
    before = server.metric("qwick:request_success_total", finished_reason="length")
    response = server.post("/v1/completions", content=b'{"prompt": "Hi", "max_tokens": 1}', headers=headers)
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    assert server.metric("qwick:request_success_total", finished_reason="length") == before


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8"])
def test_json_with_parameters_is_accepted(server, content_type):
    response = server.post("/tokenize", content=b'{"prompt": "Hi"}', headers={"content-type": content_type})
    assert response.status_code == 200


def test_a_client_hanging_up_mid_upload_is_logged_as_499_without_a_traceback(server, caplog):
    caplog.set_level(logging.INFO, logger="qwick.server")
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Request-Id: hangs-up-mid-upload\r\nContent-Length: 100000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head + b'{"messages": [')
    mine = lambda: [r for r in caplog.records if "hangs-up-mid-upload" in r.getMessage()]  # noqa: E731
    assert wait_until(lambda: any("-> 499" in r.getMessage() for r in mine()))
    assert all(r.levelno < logging.ERROR and r.exc_info is None for r in mine())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert server.get("/health").status_code == 200


def test_models_name_the_served_model_as_root_not_its_path(server, tiny_model_dir):
    response = server.get("/v1/models")
    assert [card["root"] for card in response.json()["data"]] == [MODEL]
    assert str(tiny_model_dir) not in response.text


@pytest.mark.parametrize("path", ["/v1/rerank", "/v1/score", "/moderate", "/v1/moderate", "/v1/embeddings"])
def test_the_api_key_covers_the_json_endpoints(keyed, path):
    response = keyed.post(path, json={"query": "q", "documents": ["d"], "text": "t"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_health_and_version_are_open_json(keyed):
    import qwick

    health, version = keyed.get("/health"), keyed.get("/version")
    assert health.status_code == 200 and health.headers["content-type"] == "application/json"
    assert health.json() == {"status": "ok"}
    assert version.status_code == 200 and version.json() == {"version": qwick.__version__}


def test_openapi_declares_every_post_body_and_its_errors(server):
    spec = server.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    error_shape = schemas["ErrorResponse"]["properties"]["error"]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[error_shape]["properties"]) == {"message", "type", "param", "code"}
    posts = {path: ops["post"] for path, ops in spec["paths"].items() if "post" in ops}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/rerank", "/v1/score", "/moderate",
            "/v1/embeddings", "/tokenize"} <= set(posts)
    for path, op in posts.items():
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[1] in schemas, path
        for status in ("400", "401", "413", "415", "500", "503"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
    chat = schemas["ChatCompletionRequest"]
    assert "messages" in chat["required"] and "messages" in chat["properties"]
    assert "userId" in schemas["ModerateRequest"]["properties"]
    score = schemas["ScoreBody"]["anyOf"]
    assert {s["$ref"].rsplit("/", 1)[1] for s in score} == {"ScoreRequest", "PairScoreRequest"}
