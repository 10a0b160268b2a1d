"""The FastAPI app's wiring: the routers of server/routes/, the guard (request ids, API key), the error
handlers, CORS, lifespan (engine shutdown)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from qwick.engine.async_engine import AsyncLLMEngine
from qwick.engine.client import EngineClient
from qwick.engine.grammar import GrammarCompiler
from qwick.gates.service import GateService
from qwick.llm import LLM, start_async_engine
from qwick.lora.manager import LoRAManager
from qwick.lora.modules import served_lora_modules
from qwick.lora.request import LoRARequest
from qwick.rag.rerank import gate_reranker
from qwick.rag.service import RagService
from qwick.server.errors import add_error_handlers
from qwick.server.guard import HTTPGuard
from qwick.server.metrics import ServerMetrics
from qwick.server.openapi import JSONRouter, document
from qwick.server.routes import (
    chat,
    completions,
    embeddings,
    gates,
    health,
    lora_admin,
    messages,
    models,
    pipelines,
    rerank,
    responses,
    retrieval,
    tokenize,
)
from qwick.server.routes.gates import GateOptions, setup_gates
from qwick.server.served_model import ServedModel
from qwick.server.serving import Admission, ServerContext, ServerLimits
from qwick.tokenizer import Tokenizer

logger = logging.getLogger("qwick.server")


def create_app(client: EngineClient, model: ServedModel, api_key: str | None = None, *,
               allowed_origins: Sequence[str] = (), limits: ServerLimits | None = None,
               gates: GateOptions | None = None, lora_modules: Sequence[LoRARequest] = (),
               lora_runtime_updates: bool = False, mcp_path: str | None = None,
               rag: RagService | None = None) -> FastAPI:
    """An OpenAI-compatible app over `client`, which it owns from now on (it shuts it down on app shutdown).

    `model`: what the server needs of the served model (name, tokenizer, limits; `ServedModel.of(llm)`).
    `lora_modules`: adapters served under their own model names, already loaded in the engine (`build_app` and
    `start_llm` load them). `lora_runtime_updates`: add POST /v1/load_lora_adapter and /v1/unload_lora_adapter
    (needs `model.lora`: an LLM with enable_lora=True). `mcp_path`: serve the gates as MCP tools (streamable
    HTTP) at this path, over the same gate service and ledger (qwick.mcp_server).
    `rag`: the indexes of /v1/retrieve and /v1/answer
    (`qwick serve --index`); without a reranker of its own it reranks with the score gate, as /v1/score does.
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
    if rag is not None and rag.reranker is None:
        rag.reranker = gate_reranker(gate_service)
    ctx = ServerContext(engine_client, tokenizer, served_model_name, max_model_len, limits,
                        ServerMetrics(served_model_name, engine_client.stats), Admission(capacity), grammars,
                        adapters)

    mcp_app = _mcp_app(gate_service, mcp_path) if mcp_path else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if mcp_app is not None:  # a mounted app's lifespan is not run for it: its session manager starts here
                await stack.enter_async_context(mcp_app.router.lifespan_context(mcp_app))
            yield
        logger.info("shutting down the engine")
        await engine_client.shutdown()  # uvicorn has let in-flight requests finish by now
        if rag is not None:
            await rag.close()  # engines of its own (an index's embedding model)
        if gates.ledger is not None:
            gates.ledger.close()  # commit what is still queued

    app = FastAPI(title="qwick", summary="OpenAI-compatible server for Qwen3", lifespan=lifespan)
    app.state.ctx = ctx
    app.state.rag = rag  # the RagService of --index (None without), for routes that retrieve
    # `qwick serve` calls this when its shutdown timeout expires: the engine ends what still runs (see runner.py)
    app.state.abort_running = (lambda: client.stop(timeout=0)) if isinstance(client, AsyncLLMEngine) else None
    lora_manager = None
    if lora_runtime_updates:
        if model.lora is None:
            raise ValueError("runtime LoRA updates need an LLM built with enable_lora=True")
        lora_manager = model.lora
    routers = _routers(ctx, gate_service, lora_manager, rag)
    for router in routers:
        app.include_router(router)
    document(app, routers)
    if mcp_app is not None:
        app.router.routes.extend(mcp_app.routes)  # after the API's routes: the one MCP endpoint
    add_error_handlers(app)
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
              client: AsyncLLMEngine | None = None, lora_runtime_updates: bool = False,
              mcp_path: str | None = None, rag: RagService | None = None) -> FastAPI:
    """`create_app` over an `LLM` or a bare `EngineClient`; the app owns the engine from now on.

    An `LLM` brings its tokenizer, context length and batch size; a bare `EngineClient` needs `tokenizer`,
    `max_model_len`, `served_model_name` and (only with `limits.max_queue`) `max_num_seqs`.
    `lora_modules`: adapters served under their own model names (an LLM needs enable_lora=True; each is loaded
    here, so a bad adapter fails at startup).
    `client`: the AsyncLLMEngine already stepping this LLM's engine, when the LLM was built on its loop thread
    (`start_llm`: faster on CPU, see qwick.engine.async_engine); `start_llm` also loaded `lora_modules`.
    """
    options: dict[str, Any] = {"allowed_origins": allowed_origins, "limits": limits,
                               "lora_modules": lora_modules, "lora_runtime_updates": lora_runtime_updates,
                               "mcp_path": mcp_path, "rag": rag}
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


def _routers(ctx: ServerContext, gate_service: GateService, lora_manager: LoRAManager | None,
             rag: RagService | None = None) -> list[JSONRouter]:
    """Every endpoint family's router (server/routes/), in /openapi.json's order; the LoRA admin routes only with
    `lora_manager` (--enable-lora-runtime-updates)."""
    routers = [health.router(ctx), models.router(ctx), chat.router(ctx), completions.router(ctx),
               tokenize.router(ctx), gates.router(ctx, gate_service), rerank.router(ctx, gate_service),
               embeddings.router(ctx, gate_service), pipelines.router(ctx, gate_service, rag),
               retrieval.router(ctx, rag)]
    routers += [messages.router(ctx), responses.router(ctx)]  # Anthropic Messages, OpenAI Responses
    if lora_manager is not None:
        routers.append(lora_admin.router(ctx, lora_manager))
    return routers


def _mcp_app(service: GateService, path: str) -> Any:
    """The gates' MCP server as a streamable-HTTP app with its endpoint at `path` (`qwick serve --mcp-path`)."""
    from qwick.mcp_server.tools import gate_mcp_server

    if not path.startswith("/") or path.rstrip("/") in ("", "/v1"):
        raise ValueError(f"--mcp-path must be a path of its own such as /mcp, got {path!r}")
    return gate_mcp_server(service).streamable_http_app(streamable_http_path=path)
