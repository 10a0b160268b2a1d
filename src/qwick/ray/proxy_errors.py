"""The Serve HTTP proxy's error middleware: a request whose replica died mid-way gets qwick's OpenAI-shaped error
instead of the proxy's bare "Internal Server Error" (503 `server_error`; a stream that had started ends with an
error event and [DONE]). Serve's proxy loads it from RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH, which
`qwick.ray.cluster.connect` sets for a cluster it starts (set it on `ray start` for a cluster of your own)."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.middleware import Middleware

logger = logging.getLogger("qwick.ray")
REPLICA_FAILED = ("the replica serving this request failed (Ray replaces it; new requests go to live replicas): "
                  "retry the request")
# qwick.server.errors' shape, written out here: the proxy process must not import the engine (torch) for it
ERROR_BODY = {"error": {"message": REPLICA_FAILED, "type": "server_error", "param": None, "code": "replica_failed"}}


class ReplicaErrorMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "ended": False, "stream": False}

        async def tracking_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                headers = dict(message.get("headers") or [])
                state["stream"] = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["ended"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # the proxy lost the replica: answer in the API's error shape
            logger.exception("request to %s failed in the proxy", scope.get("path"))
        if state["ended"]:
            return
        if not state["started"]:
            body = json.dumps(ERROR_BODY).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        elif state["stream"]:
            event = f"data: {json.dumps(ERROR_BODY)}\n\ndata: [DONE]\n\n".encode()
            await send({"type": "http.response.body", "body": event})
        else:
            await send({"type": "http.response.body", "body": b""})


def middlewares() -> list[Middleware]:
    return [Middleware(ReplicaErrorMiddleware)]
