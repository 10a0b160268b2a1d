"""The offline gates API (`llm.classify / score / embed / gate`): GateService over the LLM's own engine,
stepped in the caller's thread. Requests submitted together (a batch of texts, the items of a score call)
run in the same engine steps."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from qwick.engine.llm_engine import LLMEngine, StepOutput
from qwick.engine.protocol import RequestDelta
from qwick.engine.readout import EmbeddingOutput, PoolSpec, ScoreOutput, ScoreSpec
from qwick.lora.request import LoRARequest
from qwick.sampling_params import SamplingParams
from qwick.tasks.decisions import Decision
from qwick.tasks.identity import ModelIdentity
from qwick.tasks.ledger import Ledger
from qwick.tasks.loader import Gates, load_gates
from qwick.tasks.service import GateService

if TYPE_CHECKING:
    from qwick.llm import LLM

T = TypeVar("T")


class InlineEngine:
    """A TaskEngine over an LLMEngine that nothing else steps right now."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._done: dict[str, StepOutput] = {}

    async def score(self, context_ids: list[int], continuations: list[list[int]], request_id: str,
                    lora_request: LoRARequest | None = None) -> ScoreOutput:
        self.engine.add_readout(request_id, ScoreSpec(list(context_ids), [list(c) for c in continuations],
                                                   lora_request=lora_request))
        result = (await self._wait(request_id)).result
        assert isinstance(result, ScoreOutput)
        return result

    async def embed(self, prompt_ids: list[int], request_id: str,
                    lora_request: LoRARequest | None = None) -> EmbeddingOutput:
        self.engine.add_readout(request_id, PoolSpec(list(prompt_ids), lora_request))
        result = (await self._wait(request_id)).result
        assert isinstance(result, EmbeddingOutput)
        return result

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                       prompt: str | None = None, lora_request: LoRARequest | None = None) -> AsyncIterator[RequestDelta]:
        self.engine.add_request(request_id, prompt_ids, params, prompt, lora_request)
        out = await self._wait(request_id)
        yield RequestDelta(request_id, out.deltas, True, out.finished_request)

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


class OfflineTasks:
    """Synchronous gates for the `LLM` object."""

    def __init__(self, llm: LLM, gates: Gates | None = None, ledger: Ledger | None = None,
                 adapters: Sequence[LoRARequest] = ()) -> None:
        tokenizer = llm.get_tokenizer()
        gates = gates or load_gates(None)
        gates.check_tokens(tokenizer)
        self.service = GateService(InlineEngine(llm.engine), tokenizer, gates, ModelIdentity.of(llm), ledger,
                                   _by_name(adapters))

    def load_gates(self, path: str | Path, adapters: Sequence[LoRARequest] = ()) -> None:
        """Use the gates in a gates file (besides the built-ins); `adapters`: the LoRA adapters its gates may
        name, by `lora_name` (the LLM needs enable_lora=True)."""
        gates = load_gates(path)
        gates.check_tokens(self.service.tokenizer)
        known = {**self.service.adapters, **_by_name(adapters)}
        gates.check_adapters(known)
        self.service.adapters, self.service.gates = known, gates

    def classify(self, texts: str | list[str], labels: list[str] | None = None,
                 gate: str | None = None) -> Decision | list[Decision]:
        many = [texts] if isinstance(texts, str) else list(texts)
        out = run_sync(_gather([self.service.classify(t, labels, gate) for t in many]))
        return out[0] if isinstance(texts, str) else out

    def moderate(self, texts: str | list[str], gate: str | None = None) -> Decision | list[Decision]:
        many = [texts] if isinstance(texts, str) else list(texts)
        out = run_sync(_gather([self.service.moderate(t, gate) for t in many]))
        return out[0] if isinstance(texts, str) else out

    def score(self, query: str, items: list[str], instruction: str | None = None, gate: str | None = None) -> list[float]:
        decision = run_sync(self.service.score(query, list(items), gate, instruction=instruction))
        if decision.item_scores is None:
            raise TimeoutError(f"scoring missed the gate's deadline ({decision.latency_ms:.0f} ms)")
        return decision.item_scores

    def embed(self, texts: str | list[str | list[int]], dimensions: int | None = None,
              lora_request: LoRARequest | None = None) -> list[list[float]]:
        many = [texts] if isinstance(texts, str) else list(texts)
        return run_sync(self.service.embed(many, dimensions, lora_request))[0]

    def gate(self, name: str, text: str) -> Decision:
        return run_sync(self.service.run_gate(name, text))


def _by_name(adapters: Sequence[LoRARequest]) -> dict[str, LoRARequest]:
    return {lora.lora_name: lora for lora in adapters}


async def _gather(coroutines: list[Coroutine[Any, Any, T]]) -> list[T]:
    return list(await asyncio.gather(*coroutines))


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run to completion, also when called from inside a running event loop (e.g. a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
