"""GateService: the gates over an engine client — render, decide (the gate's kind: qwick.gates.kinds), meet the
deadline, record.

One implementation over the one engine-client protocol (`qwick.engine.client.EngineClient`) serves both the
HTTP server (over `AsyncLLMEngine`) and the offline API (over `InlineEngineClient`, which steps the engine in
the caller's thread). `lora_request` is passed to the engine only for gates that name an adapter.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import torch

from qwick.engine.client import EngineClient
from qwick.gates.decisions import Decision
from qwick.gates.identity import ModelIdentity, adapter_weights_sha256
from qwick.gates.kinds import GATE_KINDS, TEXT_KINDS
from qwick.gates.kinds.base import new_id
from qwick.gates.ledger import Ledger, LedgerRecord, StepTrace, sha256_text, trace_fields
from qwick.gates.loader import Gates, check_labels
from qwick.gates.prompts import embedding_ids
from qwick.gates.recording import embedding_record
from qwick.gates.spec import GateSpec
from qwick.lora.request import LoRARequest, adapter_kwargs
from qwick.tokenizer import Tokenizer

T = TypeVar("T")
MAX_WARM_PREFIXES = 1024


class GateNotFoundError(KeyError):
    """The request named a gate this server does not define."""

    def __str__(self) -> str:
        return str(self.args[0])


class GateService:
    def __init__(self, engine: EngineClient, tokenizer: Tokenizer, gates: Gates, identity: ModelIdentity,
                 ledger: Ledger | None = None, adapters: Mapping[str, LoRARequest] | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.adapters = dict(adapters or {})  # served LoRA adapters by name, for gates that name one
        gates.check_adapters(self.adapters)
        self.gates = gates
        self.identity = identity
        self.ledger = ledger
        self.record_embeddings = True  # with a ledger: a row per embed call (the server: only with --ledger-all)
        self._adapter_digests: dict[str, str] = {}  # adapter name -> sha256 of its weights, for the ledger
        self._labels: dict[tuple[str, ...], list[list[int]]] = {}
        self._warm: dict[tuple[Any, ...], asyncio.Future[Any]] = {}  # (adapter, *prefix) -> its warm-up
        yes, no = tokenizer.encode("yes"), tokenizer.encode("no")
        assert len(yes) == len(no) == 1, "Qwen3's vocabulary has 'yes' and 'no' as single tokens"
        self.yes_no = [no, yes]

    def gate(self, name: str | None, kinds: tuple[str, ...]) -> GateSpec:
        """The named gate (default: the one named after the first kind), checked to be of one of `kinds`."""
        name = name or kinds[0]
        spec = self.gates.get(name)
        if spec is None:
            raise GateNotFoundError(f"no gate named {name!r}; this server defines: {', '.join(sorted(self.gates))}")
        if spec.kind not in kinds:
            raise ValueError(f"gate {name!r} is a {spec.kind} gate; this needs a {' or '.join(kinds)} gate")
        return spec

    async def run(self, spec: GateSpec, inputs: dict[str, Any], request_id: str | None = None,
                  user_id: str | None = None, trace: StepTrace | None = None) -> Decision:
        """Any gate on its inputs (as the ledger records them: {"text"}, or score's {"query", "items",
        "instruction"}): render, decide within the deadline (else its on_timeout policy), record (as a step of
        `trace`'s pipeline run, when given)."""
        kind = GATE_KINDS[spec.kind]
        rendered = kind.render(self, spec, inputs)
        decision = Decision(spec.name, spec.kind, request_id or new_id(spec.kind))
        start = time.perf_counter()
        try:
            await _within(spec.deadline_ms, kind.decide(self, spec, rendered, decision))
            decision.summary = kind.summary(decision)
        except asyncio.TimeoutError:  # the late engine work was cancelled, hence aborted
            kind.time_out(spec, decision)
        decision.latency_ms = (time.perf_counter() - start) * 1000
        decision.prompt_tokens = sum(len(r.ids) for r in rendered)
        decision.prompt_sha256 = sha256_text("\x1e".join(r.text for r in rendered))
        if self.ledger is not None:
            self.ledger.record(self._record(spec, decision, inputs, user_id, trace))
        return decision

    async def moderate(self, text: str, gate: str | None = None, *, user_id: str | None = None,
                       request_id: str | None = None) -> Decision:
        return await self.run(self.gate(gate, ("moderate",)), {"text": text}, request_id, user_id)

    async def classify(self, text: str, labels: list[str] | None = None, gate: str | None = None, *,
                       request_id: str | None = None) -> Decision:
        spec = self.gate(gate, ("classify", "moderate"))
        if labels is not None:  # ad-hoc labels: the gate's instruction and rule, these labels
            spec = replace(spec, kind="classify", labels=tuple(labels))
            check_labels(spec, self.tokenizer)
        return await self.run(spec, {"text": text}, request_id)

    async def score(self, query: str, items: list[str], gate: str | None = None, *, instruction: str | None = None,
                    request_id: str | None = None) -> Decision:
        """Relevance of each item to the query: P(yes) in Qwen3-Reranker's format, items batched."""
        inputs = {"query": query, "items": items, "instruction": instruction}
        return await self.run(self.gate(gate, ("score",)), inputs, request_id)

    async def rewrite(self, text: str, gate: str | None = None, *, request_id: str | None = None) -> Decision:
        """A rewrite or extract gate: schema-constrained generation, parsed and validated."""
        return await self.run(self.gate(gate, ("rewrite", "extract")), {"text": text}, request_id)

    async def run_gate(self, name: str, text: str, *, request_id: str | None = None) -> Decision:
        """Any gate that takes a text (moderate, classify, rewrite, extract) by name (the offline `llm.gate`)."""
        return await self.run(self.gate(name, TEXT_KINDS), {"text": text}, request_id)

    # ------------------------------------------------------------------------------------- embeddings
    async def embed(self, inputs: list[str | list[int]], dimensions: int | None = None,
                    lora_request: LoRARequest | None = None) -> tuple[list[list[float]], int]:
        """Last-token pooling, L2-normalised (Qwen3-Embedding); `dimensions` truncates then re-normalises (MRL);
        under `lora_request`'s adapter if given. Returns the vectors and the number of prompt tokens."""
        ids = [embedding_ids(self.tokenizer, x) if isinstance(x, str) else list(x) for x in inputs]
        start = time.perf_counter()
        outs = await asyncio.gather(*(self.engine.embed(i, new_id("embd"), **adapter_kwargs(lora_request))
                                      for i in ids))
        vectors = []
        for out in outs:
            vector = out.embedding
            if dimensions is not None:
                if not 1 <= dimensions <= vector.numel():
                    raise ValueError(f"dimensions must be in [1, {vector.numel()}] (the model's hidden size), "
                                     f"got {dimensions}")
                vector = vector[:dimensions]
            vectors.append(torch.nn.functional.normalize(vector, dim=0).tolist())
        if self.ledger is not None and self.record_embeddings:
            self.ledger.record(embedding_record(self.identity, inputs, ids, vectors, dimensions, lora_request,
                                                (time.perf_counter() - start) * 1000))
        return vectors, sum(len(i) for i in ids)

    # ---------------------------------------------------------------------------------------- helpers
    def label_ids(self, labels: tuple[str, ...]) -> list[list[int]]:
        """Each label's tokens (cached per label set)."""
        if labels not in self._labels:
            self._labels[labels] = [self.tokenizer.encode(label) for label in labels]
        return self._labels[labels]

    def adapter(self, spec: GateSpec) -> dict[str, LoRARequest]:
        """Engine keywords for the gate's adapter (none for the base model)."""
        if spec.adapter is not None and spec.adapter not in self.adapters:  # gates swapped in after start-up
            raise ValueError(f"gate {spec.name!r}: adapter {spec.adapter!r} is not a served LoRA adapter")
        return adapter_kwargs(self.adapters[spec.adapter] if spec.adapter is not None else None)

    def adapter_sha256(self, name: str) -> str:
        """sha256 of a served adapter's weight files, computed once (the ledger's record of what decided)."""
        if name not in self._adapter_digests:
            self._adapter_digests[name] = adapter_weights_sha256(self.adapters[name].lora_path)
        return self._adapter_digests[name]

    async def warm_prefix(self, prefix_ids: list[int], spec: GateSpec, remember: bool = True) -> None:
        """Prefill a shared prefix (a gate's instruction, a score request's query) before the requests that
        share it, so they reuse its blocks instead of each computing it in the same step (under the gate's
        adapter: cached blocks are per adapter). Concurrent first requests of a gate wait for the same warm-up."""
        if not prefix_ids:
            return
        key = (spec.adapter, *prefix_ids)
        warm = self._warm.get(key)
        if warm is None or (warm.done() and (warm.cancelled() or warm.exception() is not None)):
            warm = asyncio.ensure_future(self.engine.continuation_logprobs(prefix_ids, [], new_id("warm"), **self.adapter(spec)))
            if remember:  # gate prefixes: once per process (ad-hoc label sets make new ones, hence the cap)
                if len(self._warm) >= MAX_WARM_PREFIXES:
                    self._warm.clear()
                self._warm[key] = warm
        await asyncio.shield(warm)  # a caller's deadline must not cancel the warm-up others wait for

    def _record(self, spec: GateSpec, decision: Decision, inputs: dict[str, Any], user_id: str | None,
                trace: StepTrace | None) -> LedgerRecord:
        scores = GATE_KINDS[spec.kind].ledger_scores(decision)
        output = {"decision": decision.summary, "label": decision.label, "scores": scores,
                  "output": decision.output_text}
        return LedgerRecord(
            request_id=decision.request_id, ts=time.time(), kind=decision.kind, gate=decision.gate,
            model=self.identity.model, revision=self.identity.revision, weights_sha256=self.identity.weights_sha256,
            prompt_sha256=decision.prompt_sha256, output_sha256=sha256_text(json.dumps(output, sort_keys=True)),
            decision=decision.summary, escalate=decision.escalate, timed_out=decision.timed_out, scores=scores,
            schema_valid=decision.schema_valid, latency_ms=decision.latency_ms, prompt_tokens=decision.prompt_tokens,
            output_tokens=decision.output_tokens, gate_config=spec.to_json(),
            user_sha256=sha256_text(user_id) if user_id is not None else None, input=inputs,
            output_text=decision.output_text, adapter=spec.adapter,
            adapter_sha256=self.adapter_sha256(spec.adapter) if spec.adapter is not None else None,
            rule=GATE_KINDS[spec.kind].rule(spec, decision), **trace_fields(trace))


async def _within(deadline_ms: float | None, work: Awaitable[T]) -> T:
    if deadline_ms is None:
        return await work
    return await asyncio.wait_for(work, deadline_ms / 1000)
