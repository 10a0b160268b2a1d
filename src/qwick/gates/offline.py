"""The offline gates API (`llm.classify / score / embed / gate`): GateService over an engine client, driven
from synchronous code. The LLM builds it over an InlineEngineClient of its own engine (stepped in the caller's
thread), so requests submitted together (a batch of texts, the items of a score call) run in the same engine
steps. Nothing here knows the LLM: it gets the client, the tokenizer and the model's identity."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from qwick.engine.client import EngineClient
from qwick.engine.sync_engine import run_sync
from qwick.gates.decisions import Decision
from qwick.gates.identity import ModelIdentity
from qwick.gates.ledger import Ledger
from qwick.gates.loader import Gates, load_gates
from qwick.gates.service import GateService
from qwick.lora.request import LoRARequest
from qwick.tokenizer import Tokenizer

T = TypeVar("T")


class OfflineGates:
    """Synchronous gates (`llm.gates`): each call runs its requests to completion over `client`, which nothing
    else may drive meanwhile. `gates`: default the built-ins; `adapters`: the LoRA adapters gates may name."""

    def __init__(self, client: EngineClient, tokenizer: Tokenizer, identity: ModelIdentity, gates: Gates | None = None,
                 ledger: Ledger | None = None, adapters: Sequence[LoRARequest] = ()) -> None:
        gates = gates or load_gates(None)
        gates.check_tokens(tokenizer)
        self.service = GateService(client, tokenizer, gates, identity, ledger, _by_name(adapters))

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
