"""POST /v1/responses: OpenAI's Responses API, run as the chat request it translates to
(server/responses_chat.py), answered as a response object or its stream of events (server/responses_reply.py).
No server-side state: every request carries its whole conversation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.engine.client import RequestDelta
from qwick.outputs import CompletionOutput, RequestOutput
from qwick.server.errors import APIError
from qwick.server.openapi import JSONRouter
from qwick.server.protocol.chat import ChatDelta
from qwick.server.protocol.responses import ResponsesRequest
from qwick.server.responses_chat import chat_request, renamed
from qwick.server.responses_reply import OutputItems, new_id, now, response_object, usage
from qwick.server.routes.chat import ChatServing, ChoiceStream, chat_pieces, final_output
from qwick.server.serving import ServerContext, read_body
from qwick.server.streams import respond, stream_error


def router(ctx: ServerContext) -> JSONRouter:
    chat, routes = ChatServing(ctx), JSONRouter()

    @routes.json_post("/v1/responses", ResponsesRequest, summary="OpenAI Responses API")
    async def responses(request: Request) -> Response:
        body = await read_body(request, ResponsesRequest, ctx.limits)
        try:
            run = await chat.start(chat_request(body), request, new_id("resp"))
        except APIError as exc:
            raise renamed(exc) from None
        model, created = run.plan.model or ctx.model_name, now()

        def finished(items: OutputItems, final: RequestOutput, out: CompletionOutput) -> dict[str, Any]:
            status = "incomplete" if out.finish_reason == "length" else "completed"
            # reasoning tokens: the reasoning text re-tokenized (the think tags and a cut-off split aside)
            thought = items.reasoning_text()
            tokens = usage(len(final.prompt_token_ids), len(out.token_ids),
                           len(ctx.tokenizer.encode(thought)) if thought else 0)
            return response_object(body, run.request_id, model, created, status=status, output=items.items,
                                   usage=tokens)

        async def whole(stream: AsyncIterator[tuple[int, RequestDelta]]) -> Response:
            final = await final_output(stream, run.timer)
            out, items = final.outputs[0], OutputItems()
            items.feed_whole(chat.choice(out, run.plan))
            return JSONResponse(finished(items, final, out))

        async def events(stream: AsyncIterator[tuple[int, RequestDelta]]) -> AsyncIterator[str]:
            numbered = _Numbered()
            start = response_object(body, run.request_id, model, created)
            yield numbered.event({"type": "response.created", "response": start})
            yield numbered.event({"type": "response.in_progress", "response": start})
            items = OutputItems()
            try:
                async for piece in chat_pieces(stream, run, ChoiceStream(run.plan)):
                    if isinstance(piece, ChatDelta):
                        for event in items.feed(piece):
                            yield numbered.event(event)
                        continue
                    for event in items.close():
                        yield numbered.event(event)
                    response = finished(items, piece, piece.outputs[0])
                    yield numbered.event({"type": f"response.{response['status']}", "response": response})
            except Exception as exc:
                yield numbered.error(stream_error(exc, request.state.request_id, run.request_id))

        return await respond(request, run.stream, run.release, streaming=body.stream, whole=whole, events=events)

    return routes


class _Numbered:
    """SSE events with OpenAI's `sequence_number`, counting from 0."""

    def __init__(self) -> None:
        self.next = 0

    def event(self, payload: dict[str, Any]) -> str:
        payload = {**payload, "sequence_number": self.next}
        self.next += 1
        return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"

    def error(self, error: APIError) -> str:
        return self.event({"type": "error", "code": error.code, "message": error.message, "param": error.param})
