"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API, run as the chat request it
translates to (server/anthropic_chat.py), answered as Anthropic messages and events (server/anthropic_reply.py).
Errors under these paths have Anthropic's shape (server/errors.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.engine.client import RequestDelta
from qwick.server.anthropic_chat import chat_request, renamed
from qwick.server.anthropic_reply import (
    BlockEvents,
    end_events,
    error_event,
    message,
    new_message_id,
    start_event,
    stop_reason,
)
from qwick.server.errors import APIError
from qwick.server.openapi import JSONRouter
from qwick.server.protocol.anthropic import CountTokensRequest, MessagesRequest, TokenCount
from qwick.server.protocol.chat import ChatCompletionRequest, ChatDelta
from qwick.server.routes.chat import (
    ChatPlan,
    ChatRun,
    ChatServing,
    ChoiceStream,
    chat_pieces,
    final_output,
)
from qwick.server.serving import ServerContext, read_body
from qwick.server.streams import respond, stream_error


def router(ctx: ServerContext) -> JSONRouter:
    chat, routes = ChatServing(ctx), JSONRouter()

    @routes.json_post("/v1/messages", MessagesRequest, summary="Anthropic Messages API")
    async def messages(request: Request) -> Response:
        body = await read_body(request, MessagesRequest, ctx.limits)
        run = await _start(chat, chat_request_of(body), request)
        model = body.model

        async def whole(stream: AsyncIterator[tuple[int, RequestDelta]]) -> Response:
            final = await final_output(stream, run.timer)
            out = final.outputs[0]
            answer = message(chat.choice(out, run.plan), out, request_id=run.request_id, model=model,
                                   prompt_tokens=len(final.prompt_token_ids), stop_sequences=body.stop_sequences)
            return Response(answer.model_dump_json(), media_type="application/json")

        return await respond(request, run.stream, run.release, streaming=body.stream, whole=whole,
                             events=lambda started: _events(started, run, model, body.stop_sequences,
                                                            request.state.request_id))

    @routes.json_post("/v1/messages/count_tokens", CountTokensRequest, summary="Anthropic token counting")
    async def count_tokens(request: Request) -> Response:
        body = await read_body(request, CountTokensRequest, ctx.limits)
        ctx.resolve_model(body.model)
        chat_body = chat_request_of(body)
        prompt = await ctx.off_loop(_render, chat, chat_body)
        return JSONResponse(TokenCount(input_tokens=len(prompt.prompt_ids)).model_dump())

    return routes


def chat_request_of(body: CountTokensRequest) -> ChatCompletionRequest:
    try:
        return chat_request(body)
    except APIError as exc:
        raise renamed(exc) from None


def _render(chat: ChatServing, body: ChatCompletionRequest) -> ChatPlan:
    """The plan of a request that only counts (no max_tokens): its prompt ids are the count."""
    try:
        return chat.plan(body)
    except APIError as exc:
        raise renamed(exc) from None


async def _start(chat: ChatServing, body: ChatCompletionRequest, request: Request) -> ChatRun:
    try:
        return await chat.start(body, request, new_message_id(), clamp_max_tokens=True)
    except APIError as exc:
        raise renamed(exc) from None


async def _events(stream: AsyncIterator[tuple[int, RequestDelta]], run: ChatRun, model: str,
                  stop_sequences: list[str] | None, http_id: str) -> AsyncIterator[str]:
    yield start_event(run.request_id, model, len(run.plan.prompt_ids))
    choice, blocks = ChoiceStream(run.plan), BlockEvents()
    try:
        async for piece in chat_pieces(stream, run, choice):
            if isinstance(piece, ChatDelta):
                for event in blocks.feed(piece):
                    yield event
                continue
            out = piece.outputs[0]
            for event in blocks.close():
                yield event
            reason, sequence = stop_reason(choice.finish_reason(out), out, stop_sequences)
            for event in end_events(reason, sequence, len(out.token_ids)):
                yield event
    except Exception as exc:
        yield error_event(stream_error(exc, http_id, run.request_id))
