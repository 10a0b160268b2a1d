"""Reranking through the score gate: P(yes) in Qwen3-Reranker's format, the same path as /v1/score and
`llm.score` (qwick.gates), so a reranked hit's score equals what /v1/score returns for the pair."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from qwick.gates.identity import ModelIdentity
from qwick.gates.loader import load_gates
from qwick.gates.service import GateService
from qwick.rag.models import EngineModel

Reranker = Callable[[str, list[str]], Awaitable[list[float]]]  # (query, texts) -> relevance in [0, 1] per text


def gate_reranker(service: GateService, use_deadline: bool = True) -> Reranker:
    """Score with `service`'s score gate; `use_deadline=False` drops the gate's deadline (the command line:
    scoring a few dozen chunks on a CPU may take longer than a server's latency budget)."""

    async def rerank(query: str, texts: list[str]) -> list[float]:
        spec = service.gate(None, ("score",))
        if not use_deadline:
            spec = replace(spec, deadline_ms=None)
        decision = await service.run(spec, {"query": query, "items": texts, "instruction": None})
        if decision.item_scores is None:
            raise TimeoutError(f"reranking missed the score gate's deadline of {spec.deadline_ms} ms")
        return decision.item_scores

    return rerank


def model_reranker(model: EngineModel, use_deadline: bool = False) -> Reranker:
    """A reranker over a model of its own (e.g. Qwen3-Reranker), with the built-in score gate."""
    service = GateService(model.client, model.tokenizer, load_gates(None),
                          ModelIdentity(model.name, None, model.weights_sha256))
    return gate_reranker(service, use_deadline)
