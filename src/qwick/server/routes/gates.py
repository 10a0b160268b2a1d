"""POST /v1/moderate (and /moderate), /v1/classify, /v1/rewrite, /v1/extract: the gates (qwick.gates) over HTTP
(/v1/score and /v1/rerank: rerank.py).

Routes validate the body, take one admission slot, call the GateService and shape its Decision (each
endpoint's fields: its gate kind's `response`, qwick.gates.kinds); every
failure is the server's one error shape (unknown gate 404, bad input 400, engine down 503).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.engine.client import EngineClient, RequestFailedError
from qwick.gates.decisions import Decision
from qwick.gates.identity import ModelIdentity
from qwick.gates.kinds import GATE_KINDS
from qwick.gates.ledger import Ledger
from qwick.gates.loader import Gates, load_gates
from qwick.gates.recording import RecordingClient
from qwick.gates.service import GateNotFoundError, GateService
from qwick.gates.spec import GateError
from qwick.lora.request import LoRARequest
from qwick.server.errors import APIError, aborted, bad_request, engine_error
from qwick.server.gate_protocol import (
    ClassifyRequest,
    ModerateRequest,
    RewriteRequest,
)
from qwick.server.openapi import JSONRouter
from qwick.server.serving import ServerContext, read_body
from qwick.tokenizer import Tokenizer

if TYPE_CHECKING:
    from qwick.llm import LLM


@dataclass
class GateOptions:
    """`qwick serve --gates/--ledger/--ledger-all`: the gates file, the ledger, what it records."""

    gates: Gates | None = None  # None: the built-in gates
    ledger: Ledger | None = None
    ledger_all: bool = False  # also record every chat/text completion and embedding call
    identity: ModelIdentity | None = None  # default: from the LLM (weights hashed once) when there is a ledger


def setup_gates(options: GateOptions, client: EngineClient, tokenizer: Tokenizer, model_name: str,
                llm: LLM | None, adapters: Mapping[str, LoRARequest] | None = None) -> tuple[GateService, EngineClient]:
    """The gate service, and the client the other endpoints should use (recording, with --ledger-all).
    `adapters`: the served LoRA adapters by name, which gates may name (checked here, at start-up)."""
    gates = options.gates or load_gates(None)
    gates.check_tokens(tokenizer)
    identity = options.identity
    if identity is None:
        identity = llm.model_identity() if llm is not None and options.ledger else ModelIdentity(model_name, None, "")
    service = GateService(client, tokenizer, gates, identity, options.ledger, adapters)
    service.record_embeddings = options.ledger_all
    if options.ledger is not None and options.ledger_all:
        client = RecordingClient(client, options.ledger, identity, tokenizer)  # type: ignore[assignment]
    return service, client


def router(ctx: ServerContext, service: GateService) -> JSONRouter:
    routes = JSONRouter()

    @routes.json_post("/v1/moderate", ModerateRequest)
    async def moderate(request: Request) -> Response:
        body = await read_body(request, ModerateRequest, ctx.limits)
        d = await decide(ctx, "moderate", body.model, lambda: service.moderate(body.text, body.gate, user_id=body.user_id,
                                                               request_id=request.state.request_id))
        return gate_json(d, **GATE_KINDS["moderate"].response(d, {"text": body.text}))

    routes.json_post("/moderate", ModerateRequest, summary="Moderate (alias of /v1/moderate)")(moderate)

    @routes.json_post("/v1/classify", ClassifyRequest)
    async def classify(request: Request) -> Response:
        body = await read_body(request, ClassifyRequest, ctx.limits)
        d = await decide(ctx, "classify", body.model, lambda: service.classify(body.text, body.labels, body.gate,
                                                               request_id=request.state.request_id))
        return gate_json(d, **GATE_KINDS["classify"].response(d, {"text": body.text}))

    @routes.json_post("/v1/rewrite", RewriteRequest)
    async def rewrite(request: Request) -> Response:
        body = await read_body(request, RewriteRequest, ctx.limits)
        d = await decide(ctx, "rewrite", body.model, lambda: service.rewrite(body.text, body.gate,
                                                                        request_id=request.state.request_id))
        return gate_json(d, **GATE_KINDS["rewrite"].response(d, {"text": body.text}))

    @routes.json_post("/v1/extract", RewriteRequest)
    async def extract(request: Request) -> Response:
        body = await read_body(request, RewriteRequest, ctx.limits)
        if not body.gate:
            raise bad_request("'gate' is required: name an extract gate from the gates file", param="gate")
        d = await decide(ctx, "extract", body.model, lambda: service.rewrite(body.text, body.gate,
                                                                        request_id=request.state.request_id))
        return gate_json(d, **GATE_KINDS["extract"].response(d, {"text": body.text}))

    return routes


async def decide(ctx: ServerContext, endpoint: str, model: str | None,
                 call: Callable[[], Awaitable[Decision]]) -> Decision:
    """Run one gate call for `endpoint` under one admission slot, counting it in the metrics; the request's
    `model` must be the base model."""
    try:
        ctx.check_model(model)
        release = ctx.admission.acquire(1)
    except Exception:
        ctx.metrics.gate_failed(endpoint)
        raise
    try:
        decision = await call()
    except Exception as exc:
        ctx.metrics.gate_failed(endpoint)
        raise gate_error(exc) from exc
    finally:
        release()
    ctx.metrics.observe_gate(decision)
    return decision


def gate_error(exc: Exception) -> Exception:
    """The client-facing error for what a gate raised (the exception itself when it is our bug: a 500)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, GateNotFoundError):
        return APIError(404, str(exc), param="gate", code="gate_not_found")
    if isinstance(exc, GateError):
        return bad_request(str(exc), param=exc.field, code="invalid_value")
    if isinstance(exc, ValueError) and "max_model_len" in str(exc):
        return bad_request(str(exc), code="context_length_exceeded")
    if isinstance(exc, RequestFailedError) and exc.__cause__ is None:  # aborted, not failed: only shutdown does it
        return aborted()
    return engine_error(exc) or exc


def gate_json(d: Decision, **fields: Any) -> JSONResponse:
    common = {"gate": d.gate, "timed_out": d.timed_out, "latency_ms": round(d.latency_ms, 3),
              "request_id": d.request_id}
    return JSONResponse({**fields, **common})
