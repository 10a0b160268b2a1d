"""POST /v1/embeddings (OpenAI's shape): last-token pooling, L2-normalised, `dimensions` (MRL truncation)."""

from __future__ import annotations

import base64

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.gates.service import GateService
from qwick.server.errors import bad_request
from qwick.server.gate_protocol import MAX_INPUTS, EmbeddingRequest
from qwick.server.openapi import JSONRouter
from qwick.server.routes.gates import gate_error
from qwick.server.serving import ServerContext, read_body


def router(ctx: ServerContext, service: GateService) -> JSONRouter:
    routes = JSONRouter()

    @routes.json_post("/v1/embeddings", EmbeddingRequest)
    async def embeddings(request: Request) -> Response:
        body = await read_body(request, EmbeddingRequest, ctx.limits)
        lora = ctx.resolve_model(body.model)  # an adapter's name pools under that adapter
        inputs = _inputs(body, ctx.tokenizer.vocab_size)
        release = ctx.admission.acquire(1)
        try:
            vectors, tokens = await service.embed(inputs, body.dimensions, lora)
        except Exception as exc:
            error = gate_error(exc)
            if isinstance(exc, ValueError) and "dimensions" in str(exc):
                error = bad_request(str(exc), param="dimensions", code="invalid_value")
            raise error from exc
        finally:
            release()
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                for i, v in enumerate(vectors)]
        model = body.model if lora is not None else ctx.model_name
        return JSONResponse({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return routes


def _inputs(body: EmbeddingRequest, vocab_size: int) -> list[str | list[int]]:
    raw = body.input
    items: list[str | list[int]]
    if isinstance(raw, str):
        items = [raw]
    elif raw and isinstance(raw[0], int):
        items = [list(raw)]  # type: ignore[arg-type]
    else:
        items = list(raw)  # type: ignore[arg-type]
    if not items:
        raise bad_request("'input' is empty: give a string, a list of strings or token ids", param="input")
    if len(items) > MAX_INPUTS:
        raise bad_request(f"'input' holds {len(items)} inputs, more than the limit of {MAX_INPUTS}", param="input")
    for item in items:
        if isinstance(item, str) and not item:
            raise bad_request("'input' contains an empty string", param="input", code="invalid_value")
        if isinstance(item, list) and (not item or min(item) < 0 or max(item) >= vocab_size):
            raise bad_request(f"token-id inputs must be non-empty lists of ids in [0, {vocab_size})",
                              param="input", code="invalid_value")
    return items


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # OpenAI's: little-endian float32 bytes, base64
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector
