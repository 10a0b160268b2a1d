"""The routers of server/routes/: POST routes whose JSON body `read_body` parses (size limit first, our 400s,
never FastAPI's 422), documented in /openapi.json all the same: each route's request model and its error
responses in the one error shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from qwick.server.errors import ErrorResponse

REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "invalid request (a field, a value, malformed JSON, the context length)",
    401: "missing or wrong API key (when the server has one)",
    404: "unknown model, gate or adapter",
    413: "the request body is too large",
    415: "the body is not sent as application/json",
    500: "the server's own failure (the log has the details under the request id)",
    503: "the server is at capacity, shutting down, or its engine is not running",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _ERRORS.items()
}


class JSONRouter(APIRouter):
    """One endpoint family's routes. `@router.json_post(path, Model)` adds a POST route whose body the handler
    parses with `read_body`, documented as `Model` (`document` puts the models in the app's /openapi.json)."""

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, type[BaseModel]] = {}

    def json_post(self, path: str, body: type[BaseModel], *, summary: str | None = None,
                  extra_errors: dict[int, str] | None = None) -> Callable[[Any], Any]:
        known = self.models.setdefault(body.__name__, body)
        assert known is body, f"two request models named {body.__name__}"
        schema = {"$ref": REF.format(model=body.__name__)}
        request_body = {"required": True, "content": {"application/json": {"schema": schema}}}
        responses = {**ERROR_RESPONSES, **{s: {"model": ErrorResponse, "description": t}
                                           for s, t in (extra_errors or {}).items()}}
        return self.post(path, summary=summary, openapi_extra={"requestBody": request_body},
                         responses=responses)


def document(app: FastAPI, routers: Sequence[JSONRouter]) -> None:
    """Serve /openapi.json with the request models of `routers` (already included in `app`) in its components."""
    models: dict[str, type[BaseModel]] = {}
    for router in routers:
        for name, model in router.models.items():
            known = models.setdefault(name, model)
            assert known is model, f"two request models named {name}"

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            _, defs = models_json_schema([(m, "validation") for m in models.values()], ref_template=REF)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
