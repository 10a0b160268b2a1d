"""One error shape for every failure, as OpenAI sends it: `{"error": {"message", "type", "param", "code"}}`;
under the Anthropic Messages paths (/v1/messages...), Anthropic's: `{"type": "error", "error": {"type",
"message"}}`, with the same status codes.

Every error the server sends is an `APIError`: raised under a route (its handler below answers it), answered
by HTTPGuard before a route (401, 415, the 500 for a bug), or sent as a stream's last event (streams.error_event).

Status -> type follows OpenAI's API: client mistakes (400, 404, 413) and bad keys (401) are
`invalid_request_error`; overload (503) and our own failures (500) are `server_error`.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.engine.client import EngineNotRunningError

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
ANTHROPIC_PATH = "/v1/messages"  # its sub-paths too: /v1/messages/count_tokens
# Anthropic's error types by status (its API's table); 503 is its "overloaded_error" (Anthropic itself sends 529)
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 415: "invalid_request_error",
                   429: "rate_limit_error", 503: "overloaded_error"}
# pydantic names union branches by type in an error's location; those are not request fields
_TYPE_TAG = re.compile(r"^(str|int|float|bool|dict|list|none|tuple)$|[^A-Za-z0-9_]")


class APIError(Exception):
    """A failure to report to the client; raise it anywhere under a route."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or (SERVER_ERROR if status >= 500 else INVALID_REQUEST)
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def anthropic_body(self) -> dict[str, Any]:
        """Anthropic's shape; it has no `param`, so the field is named in the message (it is already, mostly)."""
        message = self.message
        if self.param is not None and self.param not in message:
            message = f"{self.param}: {message}"
        kind = ANTHROPIC_TYPES.get(self.status, "api_error" if self.status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def body_for(self, path: str) -> dict[str, Any]:
        """The body in the shape of the endpoint family that `path` belongs to."""
        return self.anthropic_body() if anthropic_path(path) else self.body()

    def response(self, path: str = "") -> JSONResponse:
        return JSONResponse(self.body_for(path), status_code=self.status, headers=self.headers)


def anthropic_path(path: str) -> bool:
    return path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + "/")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_supported(feature: str, param: str) -> APIError:
    return APIError(400, f"{feature} is not supported yet by qwick", param=param, code="unsupported_parameter")


def internal_error(request_id: str) -> APIError:
    return APIError(500, f"internal server error (request id {request_id}); the server log has the details",
                    code="internal_error")


def aborted() -> APIError:
    """A request the engine aborted though its client is still there: only shutdown does that."""
    return APIError(503, "the request was aborted: the server is shutting down", code="aborted")


def engine_error(exc: Exception) -> APIError | None:
    """The client-facing error for what the engine raised before a request's first output (None: a bug)."""
    if isinstance(exc, EngineNotRunningError):
        return APIError(503, "the engine is not running (the server is shutting down or failed)",
                        code="engine_not_running")
    if isinstance(exc, ValueError):  # the engine's own request validation, e.g. PromptTooLongError
        return bad_request(str(exc))
    return None



# Which complaint a body with several problems reports, decided here and not by pydantic's internal order:
# malformed JSON, then an unknown field (usually a typo of a real one), then a missing one, then bad values;
# within one kind, the first in the model's field order.
_ERROR_PRIORITY = {"json_invalid": 0, "extra_forbidden": 1, "missing": 2}


def from_validation_error(exc: ValidationError) -> APIError:
    """One complaint, chosen deterministically (see _ERROR_PRIORITY), as a 400 naming the field (never a 422)."""
    first = min(exc.errors(include_url=False), key=lambda e: _ERROR_PRIORITY.get(e["type"], len(_ERROR_PRIORITY)))
    if first["type"] == "json_invalid":
        return bad_request(f"malformed JSON in the request body: {first.get('ctx', {}).get('error', first['msg'])}",
                           code="invalid_json")
    param = field_path(first["loc"])
    if param is None:
        return bad_request(f"the request body must be a JSON object: {first['msg']}")
    return bad_request(f"invalid value for '{param}': {first['msg']}", param=param, code="invalid_value")


def field_path(loc: tuple[int | str, ...]) -> str | None:
    """("messages", 0, "role") -> "messages[0].role"; union-branch tags are skipped."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _TYPE_TAG.search(part):
            path += f".{part}" if path else part
    return path or None


def add_error_handlers(app: FastAPI) -> None:
    """An APIError raised under a route, and what FastAPI or Starlette raise (unknown path, wrong method,
    validation), answered in the one shape."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return exc.response(request.url.path)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = f"{exc.detail} ({request.method} {request.url.path})"
        return APIError(exc.status_code, message, headers=exc.headers).response(request.url.path)

    async def validation_error(request: Request, exc: Exception) -> Response:
        return bad_request(f"invalid request: {exc}").response(request.url.path)

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The one error shape, for /openapi.json."""

    error: ErrorBody
