"""EngineClient: the one async seam between an engine and its callers (vLLM's name), and what it streams.

Two implementations, side by side in this package: `AsyncLLMEngine` (async_engine.py: a background thread steps
the engine; the HTTP server's) and `InlineEngineClient` (sync_engine.py: the awaiting coroutines step the engine
in the caller's thread; the offline gates'). Callers (the server routes, `qwick.gates.GateService`) take an
`EngineClient` and never see which one runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from qwick.engine.readout import ContinuationLogprobs, EmbeddingOutput, ReadoutOutput
from qwick.lora.request import LoRARequest
from qwick.outputs import RequestOutput, StreamDelta
from qwick.sampling_params import SamplingParams


@dataclass
class RequestDelta:
    """What one engine step produced for one request; `output` is set on the final one only."""

    request_id: str
    deltas: list[StreamDelta]  # one per sample that advanced this step
    finished: bool
    output: RequestOutput | None = None
    result: ReadoutOutput | None = None  # scoring / pooling requests: their result, on the final delta


class EngineNotRunningError(RuntimeError):
    """The engine is shut down (or its loop died): it takes no new requests."""


class RequestFailedError(RuntimeError):
    """The engine failed while this request was running; `__cause__` is the engine's exception."""


class EngineClient(Protocol):
    def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                 prompt: str | None = None,
                 lora_request: LoRARequest | None = None) -> AsyncIterator[RequestDelta]:
        """Stream a request's deltas (with `lora_request`'s adapter, if given). Stopping iteration early aborts
        the request in the engine."""
        ...

    async def continuation_logprobs(self, context_ids: list[int], continuations: list[list[int]],
                                    request_id: str, top_logprobs: int = 0,
                                    lora_request: LoRARequest | None = None) -> ContinuationLogprobs:
        """Exact total logprob of each continuation after the context (the context is computed once); with
        `top_logprobs`, also the most likely tokens at each scored position; with `lora_request`, under that
        adapter."""
        ...

    async def embed(self, prompt_ids: list[int], request_id: str,
                    lora_request: LoRARequest | None = None) -> EmbeddingOutput:
        """Prefill only: the last token's final hidden state (after the final norm), under `lora_request`'s
        adapter if given."""
        ...

    async def abort(self, request_id: str) -> None:
        """End a request now: its stream gets a final delta with finish_reason "abort". Unknown ids: no-op."""
        ...

    def stats(self) -> Any:
        """The engine's latest stats snapshot, or None if the engine reports none."""
        ...

    async def shutdown(self) -> None:
        """Stop taking requests, let running ones finish (up to a timeout), then stop the engine loop."""
        ...

    @property
    def is_running(self) -> bool: ...

    @property
    def errored(self) -> bool: ...
