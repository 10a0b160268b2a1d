"""The Serve proxy's middleware: a request whose replica died gets the OpenAI error shape (no Ray needed)."""

from __future__ import annotations

import asyncio
import json

from qwick.ray.proxy_errors import ReplicaErrorMiddleware


def call(app) -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(ReplicaErrorMiddleware(app)({"type": "http", "path": "/v1/chat/completions"}, receive, send))
    return sent


def test_no_response_becomes_a_503_in_the_openai_error_shape():
    async def died(scope, receive, send):  # what Serve's proxy does when the replica's actor died: send nothing
        return

    start, body = call(died)
    assert start["status"] == 503
    error = json.loads(body["body"])["error"]
    assert error["type"] == "server_error" and error["code"] == "replica_failed" and "retry" in error["message"]


def test_an_exception_in_the_proxy_is_answered_too():
    async def raises(scope, receive, send):
        raise RuntimeError("actor died")

    assert call(raises)[0]["status"] == 503


def test_a_started_stream_ends_with_an_error_event_and_done():
    async def cut(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})

    sent = call(cut)
    tail = sent[-1]["body"].decode()
    assert tail.endswith("data: [DONE]\n\n") and '"replica_failed"' in tail
    assert not sent[-1].get("more_body", False)


def test_a_whole_response_passes_untouched():
    async def fine(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    assert [m.get("body") for m in call(fine)] == [None, b"ok"]
