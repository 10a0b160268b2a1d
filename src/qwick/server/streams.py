"""Engine streams to HTTP: interleaving, the first-output check, SSE, and aborting when the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from qwick.engine.client import RequestDelta
from qwick.server.errors import APIError, engine_error, internal_error
from qwick.server.serving import check_output

logger = logging.getLogger("qwick.server")
T = TypeVar("T")
SSE_DONE = "data: [DONE]\n\n"
CLIENT_CLOSED = 499  # nginx's status for "the client went away first"; nobody reads it


async def merged(streams: list[AsyncIterator[RequestDelta]]) -> AsyncIterator[tuple[int, RequestDelta]]:
    """Interleave several engine streams as their outputs arrive; closing this closes (aborts) all of them."""
    if len(streams) == 1:
        try:
            async for item in streams[0]:
                check_output(item)
                yield 0, item
        finally:
            await aclose(streams[0])
        return
    queue: asyncio.Queue[tuple[int, RequestDelta | Exception | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[RequestDelta]) -> None:
        try:
            async for item in stream:
                queue.put_nowait((index, item))
            queue.put_nowait((index, None))
        except Exception as exc:
            queue.put_nowait((index, exc))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, Exception):
                raise engine_error(item) or item
            else:
                check_output(item)
                yield index, item
    finally:  # cancelling a pump ends its engine stream, which aborts the request
        for task in tasks:
            task.cancel()


async def started(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Wait for the stream's first item, so a request the engine rejects is an HTTP error, not a broken stream;
    returns a stream that yields everything, the first item included."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = None
    except Exception as exc:
        await aclose(stream)
        error = engine_error(exc)
        if error is None:
            raise
        raise error from exc

    async def replay() -> AsyncIterator[T]:
        try:
            if first is not None:
                yield first
                async for item in stream:
                    yield item
        finally:
            await aclose(stream)

    return replay()


async def aclose(stream: AsyncIterator[Any]) -> None:
    """Close an async generator now, even inside a cancelled scope (its cleanup aborts engine requests)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()


def sse(payload: BaseModel | dict[str, Any]) -> str:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


def error_event(exc: Exception, http_id: str, request_id: str) -> str:
    """The event that ends a stream failing mid-way (call it in the `except`): the error in the one shape, or for
    our own bug a logged 500 naming the request id. The status is gone by then: only the body tells."""
    return sse(stream_error(exc, http_id, request_id).body())


def stream_error(exc: Exception, http_id: str, request_id: str) -> APIError:
    """What a stream failing mid-way reports (call it in the `except`): the APIError itself, or for our own bug
    a logged 500 naming the request id; each endpoint family writes it in its own event shape."""
    if isinstance(exc, APIError):
        return exc
    logger.exception("request %s (%s) failed mid-stream", http_id, request_id)
    return internal_error(http_id)




class SSEResponse(StreamingResponse):
    """Server-sent events; when the client goes away mid-stream the generator is closed at once, and with it
    the engine requests it was reading (their KV blocks are freed and the abort is counted)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], headers: dict[str, str] | None = None) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await aclose(self.body_iterator)


async def respond(request: Request, stream: AsyncIterator[T], release: Callable[[], None], *, streaming: bool,
                  whole: Callable[[AsyncIterator[T]], Awaitable[Response]],
                  events: Callable[[AsyncIterator[T]], AsyncIterator[str]]) -> Response:
    """Run an admitted request: `whole` builds a JSON response, `events` the SSE chunks. The engine must accept
    it first (else an HTTP error), a client that hangs up aborts it, and its admission is released at the end."""

    async def complete() -> Response:
        started_stream = await started(stream)
        try:
            return await whole(started_stream)
        finally:
            await aclose(started_stream)

    if not streaming:
        try:
            result = await unless_disconnected(request, complete())
        finally:
            release()
        return result if result is not None else Response(status_code=CLIENT_CLOSED)
    try:
        started_stream = await unless_disconnected(request, started(stream))
    except BaseException:
        release()
        raise
    if started_stream is None:
        release()
        return Response(status_code=CLIENT_CLOSED)
    return SSEResponse(_then(events(started_stream), release, started_stream))


async def _then(events: AsyncIterator[str], release: Callable[[], None],
                stream: AsyncIterator[Any]) -> AsyncIterator[str]:
    try:
        async for event in events:
            yield event
    finally:
        release()
        await aclose(events)
        await aclose(stream)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work` unless the client hangs up first: then cancel it (aborting its engine requests), None."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    logger.info("request %s: client disconnected, request aborted", request.state.request_id)
    return None


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
