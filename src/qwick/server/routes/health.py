"""GET /health, /version and /metrics: what load balancers, deploy scripts and Prometheus poll (no API key)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

import qwick
from qwick.server.errors import APIError
from qwick.server.openapi import ERROR_RESPONSES, JSONRouter
from qwick.server.serving import ServerContext


def router(ctx: ServerContext) -> JSONRouter:
    routes = JSONRouter()

    @routes.get("/health", responses={503: ERROR_RESPONSES[503]})
    async def health() -> Response:
        if ctx.engine.errored or not ctx.engine.is_running:
            return APIError(503, "the engine is not running", code="engine_not_running").response()
        return JSONResponse({"status": "ok"})

    @routes.get("/version")
    async def version() -> Response:
        return JSONResponse({"version": qwick.__version__})

    @routes.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return routes
