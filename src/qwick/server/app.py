"""The FastAPI app: routes, request ids, API-key check, error shape, lifespan (engine shutdown)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import qwick
from qwick.engine.async_engine import AsyncLLMEngine
from qwick.engine.client import EngineClient
from qwick.engine.grammar import GrammarCompiler
from qwick.llm import LLM, start_async_engine
from qwick.lora.modules import served_lora_modules
from qwick.lora.request import LoRARequest
from qwick.server.chat import ChatServing
from qwick.server.completions import CompletionServing
from qwick.server.embeddings import add_embedding_routes
from qwick.server.errors import APIError, bad_request
from qwick.server.gates import GateOptions, add_gate_routes, setup_gates
from qwick.server.guard import HTTPGuard
from qwick.server.lora_admin import add_lora_admin_routes
from qwick.server.metrics import ServerMetrics
from qwick.server.openapi import ERROR_RESPONSES, JSONRoutes
from qwick.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    ModelCard,
    ModelList,
    TokenizeRequest,
)
from qwick.server.rerank import add_rerank_routes
from qwick.server.served_model import ServedModel
from qwick.server.serving import Admission, ServerContext, ServerLimits, read_body
from qwick.server.tokenize import TokenizeServing
from qwick.tokenizer import Tokenizer

logger = logging.getLogger("qwick.server")


def create_app(client: EngineClient, model: ServedModel, api_key: str | None = None, *,
               allowed_origins: Sequence[str] = (), limits: ServerLimits | None = None,
               gates: GateOptions | None = None, lora_modules: Sequence[LoRARequest] = (),
               lora_runtime_updates: bool = False) -> FastAPI:
    """An OpenAI-compatible app over `client`, which it owns from now on (it shuts it down on app shutdown).

    `model`: what the server needs of the served model (name, tokenizer, limits; `ServedModel.of(llm)`).
    `lora_modules`: adapters served under their own model names, already loaded in the engine (`build_app` and
    `start_llm` load them). `lora_runtime_updates`: add POST /v1/load_lora_adapter and /v1/unload_lora_adapter
    (needs `model.lora`: an LLM with enable_lora=True).
    """
    limits = limits or ServerLimits()
    gates = gates or GateOptions()
    tokenizer, served_model_name, max_model_len = model.tokenizer, model.name, model.max_model_len
    adapters = served_lora_modules(lora_modules, served_model_name)
    gate_service, engine_client = setup_gates(gates, client, tokenizer, served_model_name, None, adapters)
    grammars = model.grammars
    if grammars is None:  # validation only: masks are built by the engine's own compiler
        grammars = GrammarCompiler.for_tokenizer(tokenizer, tokenizer.vocab_size, tokenizer.eos_token_id or 0)
    capacity = None
    if limits.max_queue is not None:
        if model.max_num_seqs is None:
            raise ValueError("limits.max_queue needs max_num_seqs (the engine's batch size)")
        capacity = model.max_num_seqs + limits.max_queue
    ctx = ServerContext(engine_client, tokenizer, served_model_name, max_model_len, limits,
                        ServerMetrics(served_model_name, engine_client.stats), Admission(capacity), grammars,
                        adapters)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        logger.info("shutting down the engine")
        await engine_client.shutdown()  # uvicorn has let in-flight requests finish by now
        if gates.ledger is not None:
            gates.ledger.close()  # commit what is still queued

    app = FastAPI(title="qwick", summary="OpenAI-compatible server for Qwen3", lifespan=lifespan)
    app.state.ctx = ctx
    # `qwick serve` calls this when its shutdown timeout expires: the engine ends what still runs (see runner.py)
    app.state.abort_running = (lambda: client.stop(timeout=0)) if isinstance(client, AsyncLLMEngine) else None
    routes = JSONRoutes(app)
    _add_routes(routes, ctx)
    add_gate_routes(routes, ctx, gate_service)
    add_rerank_routes(routes, ctx, gate_service)
    add_embedding_routes(routes, ctx, gate_service)
    if lora_runtime_updates:
        if model.lora is None:
            raise ValueError("runtime LoRA updates need an LLM built with enable_lora=True")
        add_lora_admin_routes(routes, ctx, model.lora)
    _add_error_handlers(app)
    app.add_middleware(HTTPGuard, api_key=api_key)
    if allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(allowed_origins), allow_methods=["*"],
                           allow_headers=["*"])
    return app


def build_app(engine: LLM | EngineClient, served_model_name: str | None = None, api_key: str | None = None, *,
              tokenizer: Tokenizer | None = None, max_model_len: int | None = None,
              max_num_seqs: int | None = None, allowed_origins: Sequence[str] = (),
              limits: ServerLimits | None = None, grammars: GrammarCompiler | None = None,
              gates: GateOptions | None = None, lora_modules: Sequence[LoRARequest] = (),
              client: AsyncLLMEngine | None = None, lora_runtime_updates: bool = False) -> FastAPI:
    """`create_app` over an `LLM` or a bare `EngineClient`; the app owns the engine from now on.

    An `LLM` brings its tokenizer, context length and batch size; a bare `EngineClient` needs `tokenizer`,
    `max_model_len`, `served_model_name` and (only with `limits.max_queue`) `max_num_seqs`.
    `lora_modules`: adapters served under their own model names (an LLM needs enable_lora=True; each is loaded
    here, so a bad adapter fails at startup).
    `client`: the AsyncLLMEngine already stepping this LLM's engine, when the LLM was built on its loop thread
    (`start_llm`: faster on CPU, see qwick.engine.async_engine); `start_llm` also loaded `lora_modules`.
    """
    options: dict[str, Any] = {"allowed_origins": allowed_origins, "limits": limits,
                               "lora_modules": lora_modules, "lora_runtime_updates": lora_runtime_updates}
    if not isinstance(engine, LLM):
        if tokenizer is None or max_model_len is None or not served_model_name:
            raise ValueError("build_app over an EngineClient needs tokenizer, max_model_len and served_model_name")
        model = ServedModel(served_model_name, tokenizer, max_model_len, max_num_seqs, grammars)
        return create_app(engine, model, api_key, gates=gates, **options)
    llm, own = engine, client is None
    if client is None:
        _add_loras(llm, lora_modules, served_model_name)  # before the engine thread: a bad one leaves no thread
        client = AsyncLLMEngine(llm.engine)
    elif client.engine is not llm.engine:
        raise ValueError("client must be the AsyncLLMEngine stepping this LLM's engine")
    try:
        if gates is not None and gates.ledger is not None and gates.identity is None:
            gates = replace(gates, identity=llm.model_identity())  # the ledger's model: weights hashed once
        return create_app(client, ServedModel.of(llm, served_model_name), api_key, gates=gates, **options)
    except BaseException:
        if own:
            client.stop()  # a setup that fails leaves no engine thread behind
        raise


def start_llm(make_llm: Callable[[], LLM], lora_modules: Sequence[LoRARequest] = (),
              served_model_name: str | None = None) -> tuple[LLM, AsyncLLMEngine]:
    """`start_async_engine` (the LLM built on the engine's loop thread, the fast way on CPU), with
    `lora_modules` loaded there too; pass both to `build_app(llm, client=...)`."""

    def build() -> LLM:
        llm = make_llm()
        _add_loras(llm, lora_modules, served_model_name)
        return llm

    return start_async_engine(build)


def _add_loras(llm: LLM, lora_modules: Sequence[LoRARequest], served_model_name: str | None) -> None:
    """Load the served adapters now (checking names and files), so a bad one fails at startup."""
    for lora in served_lora_modules(lora_modules, served_model_name or llm.model_name).values():
        llm.add_lora(lora)


def _add_routes(routes: JSONRoutes, ctx: ServerContext) -> None:
    app = routes.app
    chat, completions, tokens = ChatServing(ctx), CompletionServing(ctx), TokenizeServing(ctx)

    @app.get("/health", responses={503: ERROR_RESPONSES[503]})
    async def health() -> Response:
        if ctx.engine.errored or not ctx.engine.is_running:
            return APIError(503, "the engine is not running", code="engine_not_running").response()
        return JSONResponse({"status": "ok"})

    @app.get("/version")
    async def version() -> Response:
        return JSONResponse({"version": qwick.__version__})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> ModelList:
        # `root` is the served name, never a path: a client has no business knowing the server's file system
        base = ModelCard(id=ctx.model_name, root=ctx.model_name, max_model_len=ctx.max_model_len)
        adapters = [ModelCard(id=name, root=name, parent=ctx.model_name, max_model_len=ctx.max_model_len)
                    for name in ctx.lora_modules]
        return ModelList(data=[base, *adapters])

    @routes.post("/v1/chat/completions", ChatCompletionRequest)
    async def chat_completions(request: Request) -> Response:
        return await chat.create(await read_body(request, ChatCompletionRequest, ctx.limits), request)

    @routes.post("/v1/completions", CompletionRequest)
    async def text_completions(request: Request) -> Response:
        return await completions.create(await read_body(request, CompletionRequest, ctx.limits), request)

    @routes.post("/tokenize", TokenizeRequest)
    async def tokenize(request: Request) -> Response:
        body = tokens.tokenize(await read_body(request, TokenizeRequest, ctx.limits))
        return JSONResponse(body.model_dump(exclude_none=True))

    @routes.post("/detokenize", DetokenizeRequest)
    async def detokenize(request: Request) -> Response:
        return JSONResponse(tokens.detokenize(await read_body(request, DetokenizeRequest, ctx.limits)).model_dump())


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = f"{exc.detail} ({request.method} {request.url.path})"
        return APIError(exc.status_code, message, headers=exc.headers).response()

    async def validation_error(_: Request, exc: Exception) -> Response:
        return bad_request(f"invalid request: {exc}").response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
