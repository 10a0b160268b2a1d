"""HTTPGuard: what every request passes first: request id, API key, JSON content type, access log, and a 500 in
the one error shape for anything a route did not expect."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwick.server.errors import APIError, internal_error
from qwick.server.streams import CLIENT_CLOSED

logger = logging.getLogger("qwick.server")
access_log = logging.getLogger("qwick.server.access")  # `qwick serve --disable-log-requests` quiets it
REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")  # anything else is replaced: ids reach logs
PUBLIC_PATHS = ("/health", "/version", "/metrics", "/docs", "/openapi.json")  # vLLM leaves these open too


class HTTPGuard:
    """Pure ASGI (streams pass through untouched)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        start, status = time.perf_counter(), 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            refusal = self._auth_refusal(scope) or _content_type_refusal(scope)
            if refusal is not None:
                await refusal.response(scope["path"])(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except ClientDisconnect:  # hung up mid-upload: nobody is left to answer, and it is not our failure
            status = status or CLIENT_CLOSED
            logger.info("request %s: client disconnected before sending its whole body", request_id)
        except Exception:
            logger.exception("request %s: unhandled error in %s %s", request_id, scope["method"], scope["path"])
            if status == 0:
                await internal_error(request_id).response(scope["path"])(scope, receive, send_with_id)
        finally:
            access_log.info("request %s: %s %s -> %d in %.3f s", request_id, scope["method"], scope["path"], status,
                        time.perf_counter() - start)

    def _auth_refusal(self, scope: Scope) -> APIError | None:
        if self.api_key is None or scope["method"] == "OPTIONS" or scope["path"] in PUBLIC_PATHS:
            return None
        given = _header(scope, b"authorization")
        if given is None:
            api_key = _header(scope, b"x-api-key")  # the Anthropic SDKs' header
            if api_key is not None:
                given = b"Bearer " + api_key
        if given is None:
            return APIError(401, "missing API key: send the header 'Authorization: Bearer <key>' (or 'x-api-key: "
                                 "<key>')", code="invalid_api_key")
        scheme, _, token = given.strip().partition(b" ")
        # RFC 7235: the scheme is case-insensitive ("bearer KEY" is as good as "Bearer KEY")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
            return APIError(401, "incorrect API key provided", code="invalid_api_key")
        return None


def _content_type_refusal(scope: Scope) -> APIError | None:
    """Every POST route takes a JSON body. Refusing other types (and none) means a cross-site form or `text/plain`
    POST, which a browser sends without a CORS preflight, is never executed."""
    if scope["method"] != "POST":
        return None
    given = (_header(scope, b"content-type") or b"").decode("latin-1")
    media_type = given.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return None
    shown = f"'{media_type}'" if media_type else "no content type"
    return APIError(415, f"unsupported content type: got {shown}, expected 'application/json' (send the body as "
                         "JSON with the header 'Content-Type: application/json')", code="unsupported_media_type")


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key.lower() == name), None)


def _request_id(scope: Scope) -> str:
    given = _header(scope, REQUEST_ID_HEADER.encode())
    text = given.decode("latin-1") if given is not None else ""
    return text if _CLIENT_REQUEST_ID.match(text) else uuid.uuid4().hex
