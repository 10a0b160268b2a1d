"""POST /v1/retrieve and /v1/answer: the indexes of `qwick serve --index NAME=PATH` (qwick.rag) over HTTP.

Hits carry {id, source, score, text, meta}; answers {answer, citations, retrieved, finish_reason}, citations
grammar-restricted to the retrieved chunks. Unknown index 404, bad field 400 naming it, a query longer than the
embedding model's context 400 (context_length_exceeded), a reranker past its deadline 503.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.rag.service import DEFAULT_MAX_TOKENS, RagService, UnknownIndexError
from qwick.sampling_params import SamplingParams
from qwick.server.errors import APIError, bad_request
from qwick.server.openapi import JSONRouter
from qwick.server.protocol.retrieval import AnswerRequest, RetrieveRequest
from qwick.server.routes.gates import gate_error
from qwick.server.serving import ServerContext, new_id, read_body


def router(ctx: ServerContext, service: RagService | None) -> JSONRouter:
    routes = JSONRouter()

    def known(index: str) -> RagService:
        if service is None:
            raise APIError(404, f"no index named {index!r}: this server holds none (start it with --index "
                                "NAME=PATH)", param="index", code="index_not_found")
        return service

    def check_length(rag: RagService, index: str, text: str, field: str) -> None:
        """A text too long for the embedding model even at the longest token per byte, refused unread."""
        limit = rag.embedders[index].max_model_len if index in rag.embedders else ctx.max_model_len
        if len(text.encode()) > limit * ctx.max_token_bytes:
            raise bad_request(f"'{field}' is {len(text.encode())} bytes, longer than the embedding model's context "
                              f"of {limit} tokens", param=field, code="context_length_exceeded")

    @routes.json_post("/v1/retrieve", RetrieveRequest, summary="Search an index (vectors, BM25 or both fused)")
    async def retrieve(request: Request) -> Response:
        body = await read_body(request, RetrieveRequest, ctx.limits)
        rag = known(body.index)
        check_length(rag, body.index, body.query, "query")
        release = ctx.admission.acquire(1)
        try:
            hits = await rag.retrieve(body.index, body.query, body.top_k, body.mode, body.rerank)
        except Exception as exc:
            raise _error(exc, "query") from exc
        finally:
            release()
        return JSONResponse({"id": new_id("retrieve"), "object": "list", "index": body.index,
                             "data": [h.to_dict() for h in hits]})

    @routes.json_post("/v1/answer", AnswerRequest, summary="Answer from an index, citing the retrieved chunks")
    async def answer(request: Request) -> Response:
        body = await read_body(request, AnswerRequest, ctx.limits)
        rag = known(body.index)
        check_length(rag, body.index, body.question, "question")
        try:
            params = SamplingParams(temperature=0.0 if body.temperature is None else body.temperature,
                                    seed=body.seed, max_tokens=body.max_tokens or DEFAULT_MAX_TOKENS)
        except ValueError as exc:
            raise bad_request(str(exc), param=str(exc).split(" ", 1)[0], code="invalid_value") from None
        release = ctx.admission.acquire(1)
        try:
            result = await rag.answer(body.index, body.question, body.top_k, params=params,
                                      as_json=body.response_format == "json", rerank=body.rerank)
        except Exception as exc:
            raise _error(exc, "question") from exc
        finally:
            release()
        return JSONResponse({"id": new_id("answer"), "index": body.index, **result.to_dict()})

    return routes


def _error(exc: Exception, text_field: str) -> Exception:
    if isinstance(exc, UnknownIndexError):
        return APIError(404, str(exc), param="index", code="index_not_found")
    if isinstance(exc, TimeoutError):
        return APIError(503, str(exc), code="timeout")
    if isinstance(exc, ValueError):
        message = str(exc)
        if "context" in message:
            return bad_request(message, param=text_field, code="context_length_exceeded")
        return bad_request(message, param=_param_of(message, text_field), code="invalid_value")
    return gate_error(exc)


def _param_of(message: str, text_field: str) -> str | None:
    for name, words in (("rerank", "rerank"), ("top_k", "top_k"), ("mode", "mode")):
        if words in message:
            return name
    return text_field if "empty" in message else None

