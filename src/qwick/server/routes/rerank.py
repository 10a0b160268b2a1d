"""POST /v1/rerank (Cohere / Jina shape, as vLLM serves it) and /v1/score (qwick's `{query, items}` or vLLM's
`{text_1, text_2}`): one relevance path, the score gate's (P(yes) in Qwen3-Reranker's format)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.gates.decisions import Decision
from qwick.gates.kinds import GATE_KINDS
from qwick.gates.service import GateService
from qwick.server.errors import APIError, bad_request, from_validation_error
from qwick.server.gate_protocol import PairScoreRequest, RerankRequest, ScoreRequest
from qwick.server.openapi import JSONRouter
from qwick.server.routes.gates import decide, gate_json
from qwick.server.serving import ServerContext, new_id, read_body

_QWICK_FIELDS = {"query", "items"}
_VLLM_FIELDS = {"text_1", "text_2"}


def _either_shape(schema: dict[str, Any]) -> None:
    for key in ("type", "properties", "additionalProperties"):
        schema.pop(key, None)
    schema["anyOf"] = [{"$ref": "#/components/schemas/ScoreRequest"},
                       {"$ref": "#/components/schemas/PairScoreRequest"}]


class ScoreBody(BaseModel):
    """/v1/score's body before it is known which of the two shapes it is; documented as either."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_either_shape)


def router(ctx: ServerContext, service: GateService) -> JSONRouter:
    routes = JSONRouter()
    routes.models.update(ScoreRequest=ScoreRequest, PairScoreRequest=PairScoreRequest)  # ScoreBody names them

    async def relevance(request: Request, endpoint: str, model: str | None, query: str, items: list[str],
                        instruction: str | None) -> Decision:
        d = await decide(ctx, endpoint, model, lambda: service.score(query, items, instruction=instruction,
                                                                     request_id=request.state.request_id))
        if d.item_scores is None:  # the score gate's deadline passed: these APIs have no partial answer
            raise APIError(503, f"scoring did not finish within the score gate's deadline (gate {d.gate!r})",
                           code="timeout")
        return d

    @routes.json_post("/v1/rerank", RerankRequest, summary="Rerank documents by relevance (Cohere / Jina shape)")
    async def rerank(request: Request) -> Response:
        body = await read_body(request, RerankRequest, ctx.limits)
        texts = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
        d = await relevance(request, "rerank", body.model, body.query, texts, body.instruction)
        assert d.item_scores is not None
        order = sorted(range(len(texts)), key=lambda i: -d.item_scores[i])  # stable: ties keep input order
        results: list[dict[str, Any]] = []
        for i in order[:body.top_n]:
            result: dict[str, Any] = {"index": i, "relevance_score": d.item_scores[i]}
            if body.return_documents:
                result["document"] = {"text": texts[i]}
            results.append(result)
        return JSONResponse({"id": new_id("rerank"), "model": body.model or ctx.model_name, "results": results,
                             "usage": _usage(d)})

    @routes.json_post("/v1/score", ScoreBody, summary="Score items against a query (qwick's or vLLM's shape)")
    async def score(request: Request) -> Response:
        raw = (await read_body(request, ScoreBody, ctx.limits)).model_extra or {}
        qwick_fields, vllm_fields = sorted(_QWICK_FIELDS & set(raw)), sorted(_VLLM_FIELDS & set(raw))
        if qwick_fields and vllm_fields:
            raise bad_request(f"the body mixes qwick's score fields {qwick_fields} with vLLM's {vllm_fields}: send "
                              "either {query, items} or {text_1, text_2}", param=vllm_fields[0])
        if vllm_fields:
            pair = _validate(PairScoreRequest, raw)
            items = [pair.text_2] if isinstance(pair.text_2, str) else pair.text_2
            if not items:
                raise bad_request("'text_2' is empty: give a string or a non-empty list", param="text_2")
            d = await relevance(request, "score", pair.model, pair.text_1, items, pair.instruction)
            assert d.item_scores is not None
            data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(d.item_scores)]
            return JSONResponse({"id": new_id("score"), "object": "list", "created": int(time.time()),
                                 "model": pair.model or ctx.model_name, "data": data, "usage": _usage(d)})
        body = _validate(ScoreRequest, raw)
        d = await decide(ctx, "score", body.model, lambda: service.score(body.query, body.items, body.gate,
                                                                         instruction=body.instruction,
                                                                         request_id=request.state.request_id))
        return gate_json(d, **GATE_KINDS["score"].response(d, {"query": body.query, "items": body.items}))

    return routes


def _validate(model: type[Any], raw: dict[str, Any]) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def _usage(d: Decision) -> dict[str, int]:
    return {"prompt_tokens": d.prompt_tokens, "total_tokens": d.prompt_tokens}
