"""POST /v1/pipelines/{name}: a pipeline of the gates file (`qwick serve --gates FILE`, qwick.pipelines) on one
text. 200 with {"trace_id", "blocked", "output", "steps"} when it ran (blocked or not); a step that failed
answers in the one error shape, with the trace id and the steps run so far beside it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.gates.service import GateService
from qwick.pipelines.loader import parse_pipelines
from qwick.pipelines.results import PipelineResult
from qwick.pipelines.retrieval import Retrieval
from qwick.pipelines.runner import PipelineRunner, UnknownPipelineError
from qwick.server.errors import APIError
from qwick.server.guard import REQUEST_ID_HEADER
from qwick.server.openapi import JSONRouter
from qwick.server.protocol.pipelines import PipelineRequest
from qwick.server.routes.gates import gate_error
from qwick.server.serving import ServerContext, read_body

# a failed step's HTTP status: its input was bad, it missed a deadline (on_timeout: fail), its output was not
# valid JSON for the schema, or it failed otherwise (the index service, the engine)
FAILURE_STATUS = {"bad_input": 400, "timeout": 504, "invalid_output": 502, "step_failed": 502}


def router(ctx: ServerContext, service: GateService, retrieval: Retrieval | None = None) -> JSONRouter:
    """Raises PipelineError (naming file:line) when the gates file's pipelines cannot run here."""
    runner = PipelineRunner(service, parse_pipelines(service.gates), retrieval)
    routes = JSONRouter()

    @routes.json_post("/v1/pipelines/{name}", PipelineRequest, extra_errors={502: "a step failed", 504: "a step "
                                                                            "or the pipeline missed its deadline"})
    async def run(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            runner.pipeline(name)
        except UnknownPipelineError as exc:
            raise APIError(404, str(exc), param="name", code="pipeline_not_found") from None
        body = await read_body(request, PipelineRequest, ctx.limits)
        given = request.headers.get(REQUEST_ID_HEADER)
        client_id = given if given == request.state.request_id else None  # the guard replaces a malformed one
        release = ctx.admission.acquire(1)
        try:
            result = await runner.run(name, body.text, user_id=body.user_id, vars=body.vars, client_request_id=client_id)
        except Exception as exc:
            raise gate_error(exc) from exc
        finally:
            release()
        return _response(result)

    return routes


def _response(result: PipelineResult) -> Response:
    data = result.to_dict()
    if result.error is None:
        return JSONResponse(data)
    error = APIError(FAILURE_STATUS[result.error.kind], f"pipeline {result.pipeline!r}: {result.error.message}",
                     param=result.error.step, code=f"pipeline_{result.error.kind}")
    return JSONResponse({**error.body(), "trace_id": result.trace_id, "steps": data["steps"]}, status_code=error.status)
