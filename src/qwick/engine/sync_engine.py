"""InlineEngineClient: the EngineClient that steps an LLMEngine in the caller's thread (no loop thread).

The offline API runs over it: `LLM.generate` / `LLM.stream` through its two synchronous drivers
(`run_to_completion`, `stream`), the offline gates (`llm.classify / score / embed / gate`) through the async
protocol, where requests submitted together (a batch of texts, the items of a score call) are awaited together,
so they run in the same engine steps. `run_sync` drives such a batch of coroutines from synchronous code.
(`AsyncLLMEngine` is the other implementation: a loop thread steps the engine for the server.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from qwick.engine.client import RequestDelta
from qwick.engine.llm_engine import LLMEngine, StepOutput
from qwick.engine.readout import ContinuationLogprobs, ContinuationSpec, EmbeddingOutput, PoolSpec
from qwick.engine.stats import EngineStats
from qwick.lora.request import LoRARequest
from qwick.outputs import RequestOutput, StreamDelta
from qwick.sampling_params import SamplingParams

T = TypeVar("T")


class InlineEngineClient:
    """An EngineClient over an LLMEngine that nothing else steps right now (its owner, e.g. the LLM, is idle)."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._done: dict[str, StepOutput] = {}

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                       prompt: str | None = None, lora_request: LoRARequest | None = None) -> AsyncIterator[RequestDelta]:
        """Runs the request to its end, then yields one final delta (no streaming of partial output)."""
        self.engine.add_request(request_id, prompt_ids, params, prompt, lora_request)
        out = await self._wait(request_id)
        yield RequestDelta(request_id, out.deltas, True, out.finished_request)

    async def continuation_logprobs(self, context_ids: list[int], continuations: list[list[int]],
                                    request_id: str, top_logprobs: int = 0,
                                    lora_request: LoRARequest | None = None) -> ContinuationLogprobs:
        self.engine.add_readout(request_id, ContinuationSpec(list(context_ids), [list(c) for c in continuations],
                                                   top_logprobs, lora_request))
        result = (await self._wait(request_id)).result
        assert isinstance(result, ContinuationLogprobs)
        return result

    async def embed(self, prompt_ids: list[int], request_id: str,
                    lora_request: LoRARequest | None = None) -> EmbeddingOutput:
        self.engine.add_readout(request_id, PoolSpec(list(prompt_ids), lora_request))
        result = (await self._wait(request_id)).result
        assert isinstance(result, EmbeddingOutput)
        return result

    async def abort(self, request_id: str) -> None:
        self._done.pop(request_id, None)
        self.engine.abort(request_id)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    async def shutdown(self) -> None:
        """Nothing to stop: the engine belongs to the caller, and no thread runs it."""

    @property
    def is_running(self) -> bool:
        return True

    @property
    def errored(self) -> bool:
        return False

    def run_to_completion(self, request_ids: list[str]) -> list[RequestOutput]:
        """Synchronous: step until every request of `request_ids` (already added) finished; their outputs in that
        order. Any left unfinished (an exception, Ctrl-C) is aborted, so nothing of the call stays queued."""
        finished: dict[str, RequestOutput] = {}
        try:
            while len(finished) < len(request_ids) and self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.finished_request is not None:
                        finished[out.request_id] = out.finished_request
        finally:
            for request_id in request_ids:
                if request_id not in finished:
                    self.engine.abort(request_id)
        return [finished[r] for r in request_ids]

    def stream(self, request_id: str) -> Iterator[StreamDelta]:
        """Synchronous: step until `request_id` (already added) finishes, yielding its deltas that carry text,
        tokens or the finish; closing the iterator early aborts it."""
        try:
            done = False
            while not done and self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.request_id == request_id:
                        yield from (d for d in out.deltas if d.text or d.finish_reason or d.token_ids)
                        done = out.finished_request is not None
        finally:
            self.engine.abort(request_id)

    async def _wait(self, request_id: str) -> StepOutput:
        """Step the engine until `request_id` is done; every waiting coroutine steps it, which only advances
        the shared batch. Cancellation (a deadline) aborts the request."""
        done = False
        try:
            await asyncio.sleep(0)  # let sibling coroutines submit first, so they share the coming steps
            while request_id not in self._done:
                if not self.engine.has_unfinished():
                    raise RuntimeError(f"the engine lost request {request_id!r}")
                for out in self.engine.step():
                    if out.finished:
                        self._done[out.request_id] = out
                await asyncio.sleep(0)  # deadlines are checked between steps
            done = True
            return self._done.pop(request_id)
        finally:
            if not done:  # cancelled (a deadline) or failed: free its blocks now
                self._done.pop(request_id, None)
                self.engine.abort(request_id)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run to completion, also when called from inside a running event loop (e.g. a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
