"""AsyncLLMEngine: one LLMEngine stepped by one background thread, each request streamed to its coroutine.

LLMEngine is not thread-safe, so only the loop thread touches it. Coroutines hand it commands through a
thread-safe queue, applied between steps; results go back to each request's asyncio.Queue through
`loop.call_soon_threadsafe`. Torch releases the GIL inside its kernels, so the event loop stays responsive.

Build the engine on the loop thread (pass a factory, not an engine) when you can. torch's CPU ops run on
OpenMP, whose thread pool belongs to the thread that first ran a parallel op; once two threads own pools, the
CPU is oversubscribed and OpenMP stops spinning between ops: every op then sleeps and wakes its workers
(measured on a 2-vCPU VM: a small op 7 us -> 70 us, a 0.6B prefill step 145 ms -> 247 ms). Loading the model
on the main thread and stepping it here creates exactly that; a factory keeps every torch op on one thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from qwick.engine.client import EngineNotRunningError, RequestDelta, RequestFailedError
from qwick.engine.llm_engine import LLMEngine
from qwick.engine.readout import (
    ContinuationLogprobs,
    ContinuationSpec,
    EmbeddingOutput,
    PoolSpec,
    ReadoutOutput,
    ReadoutSpec,
)
from qwick.engine.stats import EngineStats
from qwick.lora.request import LoRARequest
from qwick.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


_Item = RequestDelta | BaseException


@dataclass(eq=False)
class _Stream:
    """The way back to one request's consumer; identity (not the id) names a request, since ids get reused."""

    request_id: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)


@dataclass
class _Add:
    stream: _Stream
    prompt_ids: list[int]
    params: SamplingParams
    prompt: str | None
    lora_request: LoRARequest | None = None


@dataclass
class _AddReadout:
    stream: _Stream
    spec: ReadoutSpec


@dataclass
class _Abort:
    stream: _Stream


@dataclass
class _Stop:
    graceful: bool  # True: finish the running requests first; False: abort them


_Command = _Add | _AddReadout | _Abort | _Stop


class AsyncLLMEngine:
    """An EngineClient over one LLMEngine, which it owns from now on: nothing else may step or change it."""

    def __init__(self, engine: LLMEngine | Callable[[], LLMEngine], stats_interval: float = 0.5) -> None:
        """`engine`, or a factory the loop thread calls first (see the module docstring); a factory's error is
        raised here, and then no thread is left behind."""
        self.stats_interval = stats_interval
        self._inbox: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _streams and _accepting, and orders puts to the inbox
        self._streams: dict[str, _Stream] = {}  # request_id -> consumer, while the consumer iterates
        self._accepting = True
        self._error: BaseException | None = None
        # owned by the loop thread
        self._live: dict[str, _Stream] = {}  # requests the engine holds
        self._draining = False
        self._stats_time = time.monotonic()
        built = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.engine = engine if isinstance(engine, LLMEngine) else engine()
                self._stats = self._read_stats()
            except BaseException as exc:  # handed to the constructor, which raises it
                failure.append(exc)
                return
            finally:
                built.set()
            self._run()

        self._thread = threading.Thread(target=run, name="qwick-engine-loop", daemon=True)
        self._thread.start()
        built.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        # At interpreter exit, stop the loop between two steps. Left running (a caller that failed and never shut
        # it down), the daemon thread can still be inside a torch op when the process tears down, which aborts it:
        # "terminate called without an active exception", exit status 134.
        atexit.register(self.stop)

    # ---- EngineClient, called from coroutines ----

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                       prompt: str | None = None,
                       lora_request: LoRARequest | None = None) -> AsyncIterator[RequestDelta]:
        prompt_ids = list(prompt_ids)  # the caller may reuse its list
        stream = self._submit(request_id, lambda s: _Add(s, prompt_ids, params, prompt, lora_request))
        finished = False
        try:
            while not finished:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True  # the engine no longer holds this request
                    raise item
                finished = item.finished
                yield item
        finally:  # also on break, cancellation and client disconnect: free the request's cache
            self._release(stream, still_running=not finished)

    async def continuation_logprobs(self, context_ids: list[int], continuations: list[list[int]],
                                    request_id: str, top_logprobs: int = 0,
                                    lora_request: LoRARequest | None = None) -> ContinuationLogprobs:
        spec = ContinuationSpec(list(context_ids), [list(c) for c in continuations], top_logprobs, lora_request)
        result = await self._run_readout(spec, request_id)
        assert isinstance(result, ContinuationLogprobs)
        return result

    async def embed(self, prompt_ids: list[int], request_id: str,
                    lora_request: LoRARequest | None = None) -> EmbeddingOutput:
        result = await self._run_readout(PoolSpec(list(prompt_ids), lora_request), request_id)
        assert isinstance(result, EmbeddingOutput)
        return result

    async def _run_readout(self, spec: ReadoutSpec, request_id: str) -> ReadoutOutput:
        """One readout (continuation logprobs or pooling); cancelling the awaiting task aborts it in the engine."""
        stream = self._submit(request_id, lambda s: _AddReadout(s, spec))
        finished = False
        try:
            while not finished:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
            if item.result is None:
                raise RequestFailedError(f"request {request_id!r} was aborted before its result was ready")
            return item.result
        finally:
            self._release(stream, still_running=not finished)

    async def abort(self, request_id: str) -> None:
        with self._lock:
            stream = self._streams.pop(request_id, None)
            if stream is not None:
                self._inbox.put(_Abort(stream))

    def stats(self) -> EngineStats:
        """The engine's stats as of the last idle moment or at most `stats_interval` s ago."""
        return self._stats

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop taking requests, wait up to `timeout` s for running ones, abort what is left, stop the thread."""
        with self._lock:
            if self._accepting:
                self._accepting = False
                self._inbox.put(_Stop(graceful=True))
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            with self._lock:
                left = sorted(self._streams)
            logger.warning("requests %s still running after %.1f s of shutdown: aborting them", left, timeout)
            self._inbox.put(_Stop(graceful=False))
            await asyncio.to_thread(self._thread.join, timeout)  # at most one step more
        if not self._thread.is_alive():
            atexit.unregister(self.stop)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop now, from synchronous code (e.g. a server setup that failed after starting the engine): abort
        whatever is running and wait up to `timeout` s for the loop thread to exit."""
        with self._lock:
            self._accepting = False
            self._inbox.put(_Stop(graceful=False))
        self._thread.join(timeout)
        if not self._thread.is_alive():
            atexit.unregister(self.stop)

    @property
    def is_running(self) -> bool:
        return self._accepting and self._thread.is_alive()

    @property
    def errored(self) -> bool:
        return self._error is not None

    def _submit(self, request_id: str, command: Callable[[_Stream], _Add | _AddReadout]) -> _Stream:
        stream = _Stream(request_id, asyncio.get_running_loop())
        with self._lock:
            if not self._accepting:
                error = EngineNotRunningError("the engine is shut down or its loop died: it takes no new requests")
                raise error from self._error
            if request_id in self._streams:
                raise ValueError(f"request_id {request_id!r} is already running: give each request a unique id")
            self._streams[request_id] = stream
            self._inbox.put(command(stream))
        return stream

    def _release(self, stream: _Stream, still_running: bool) -> None:
        with self._lock:
            if self._streams.get(stream.request_id) is stream:
                del self._streams[stream.request_id]
            if still_running:
                self._inbox.put(_Abort(stream))

    # ---- the loop thread: the only code that touches self.engine ----

    def _run(self) -> None:
        try:
            while self._serve_once():
                pass
        except BaseException as exc:  # a bug outside step(): fail every caller rather than leave them hanging
            self._die(exc)

    def _serve_once(self) -> bool:
        """Apply pending commands (sleeping on the inbox when idle), then step once; False: exit the loop."""
        if not self._live and self._draining:
            return False
        commands = [] if self._live else [self._inbox.get()]
        with contextlib.suppress(queue.Empty):
            while True:
                commands.append(self._inbox.get_nowait())
        for command in commands:
            if not self._apply(command):
                return False
        if self._live:
            self._step()
        # a snapshot copies latency samples: take one per interval while busy, and exact ones when idle
        now = time.monotonic()
        if not self._live or now - self._stats_time >= self.stats_interval:
            self._stats, self._stats_time = self._read_stats(), now
        return True

    def _apply(self, command: _Command) -> bool:
        if isinstance(command, _Add | _AddReadout):
            self._add(command)
        elif isinstance(command, _Abort):
            stream = command.stream
            if self._live.get(stream.request_id) is stream:  # else it finished or failed already
                del self._live[stream.request_id]
                self._send([(stream, self._aborted(stream.request_id))])
        elif command.graceful:
            self._draining = True
        else:
            self._send([(stream, self._aborted(request_id)) for request_id, stream in self._live.items()])
            self._live.clear()
            return False
        return True

    def _add(self, command: _Add | _AddReadout) -> None:
        stream = command.stream
        try:
            if isinstance(command, _AddReadout):
                self.engine.add_readout(stream.request_id, command.spec)
            else:
                self.engine.add_request(stream.request_id, command.prompt_ids, command.params, command.prompt,
                                        command.lora_request)
        except Exception as exc:  # invalid request: its caller gets the error, the engine goes on
            self._send([(stream, exc)])
            return
        self._live[stream.request_id] = stream

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:
            self._fail_live(exc)
            return
        replies: list[tuple[_Stream, _Item]] = []
        for out in outputs:
            stream = self._live.get(out.request_id)
            if stream is None:  # not submitted through this client
                continue
            done = out.finished
            if done:
                del self._live[out.request_id]
            replies.append((stream, RequestDelta(out.request_id, out.deltas, done, out.finished_request, out.result)))
        self._send(replies)

    def _aborted(self, request_id: str) -> RequestDelta:
        """Abort in the engine; the final delta carries the partial output (finish_reason "abort")."""
        out = self.engine.abort(request_id)
        assert out is not None, "a live request is always held by the engine"
        return RequestDelta(request_id, out.deltas, True, out.finished_request)

    def _fail_live(self, exc: Exception) -> None:
        """A step raised: which of the held requests it broke is unknown, so fail them all and go on."""
        logger.error("engine step failed; failing requests %s", sorted(self._live), exc_info=exc)
        replies: list[tuple[_Stream, _Item]] = []
        for request_id, stream in self._live.items():
            try:
                self.engine.abort(request_id)
            except Exception:
                logger.exception("aborting request %r after the failed step failed too", request_id)
            error = RequestFailedError(f"the engine failed while running request {request_id!r}: {exc!r}")
            error.__cause__ = exc
            replies.append((stream, error))
        self._live.clear()
        self._send(replies)

    def _die(self, exc: BaseException) -> None:
        with self._lock:
            self._accepting = False
            self._error = exc
            pending = []
            with contextlib.suppress(queue.Empty):
                while True:
                    pending.append(self._inbox.get_nowait())
        streams = [*self._live.values(), *(c.stream for c in pending if isinstance(c, _Add | _AddReadout))]
        logger.critical("engine loop died; failing requests %s", sorted(s.request_id for s in streams),
                        exc_info=exc)
        for request_id in self._live:  # best effort: the engine may be broken too
            with contextlib.suppress(Exception):
                self.engine.abort(request_id)
        replies: list[tuple[_Stream, _Item]] = []
        for stream in streams:
            error = EngineNotRunningError(f"the engine loop died while request {stream.request_id!r} was queued "
                                          f"or running: {exc!r}")
            error.__cause__ = exc
            replies.append((stream, error))
        self._live.clear()
        self._send(replies)

    def _send(self, replies: list[tuple[_Stream, _Item]]) -> None:
        """One wake-up per event loop per step, however many requests it serves."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Stream, _Item]]] = {}
        for stream, item in replies:
            by_loop.setdefault(stream.loop, []).append((stream, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # the consumers' event loop is closed: nobody will read, free their requests
                for stream, _ in batch:
                    if self._live.get(stream.request_id) is stream:
                        del self._live[stream.request_id]
                        self.engine.abort(stream.request_id)

    def _read_stats(self) -> EngineStats:
        return self.engine.stats()


def _put_all(batch: list[tuple[_Stream, _Item]]) -> None:
    for stream, item in batch:
        stream.queue.put_nowait(item)
