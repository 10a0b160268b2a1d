"""GateService: the gates over an engine — render, score or generate, decide, meet the deadline, record.

One implementation serves both the HTTP server (over `AsyncLLMEngine`) and the offline API (over
`InlineEngine`, which steps the engine in the caller's thread).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import torch

from qwick.engine.protocol import RequestDelta
from qwick.engine.readout import EmbeddingOutput, ScoreOutput
from qwick.lora.request import LoRARequest, adapter_kwargs
from qwick.sampling_params import SamplingParams, StructuredOutputsParams
from qwick.tasks.decisions import Decision, decide_labels, normalise, timed_out
from qwick.tasks.identity import ModelIdentity, adapter_weights_sha256
from qwick.tasks.ledger import Ledger, LedgerRecord, sha256_text
from qwick.tasks.loader import Gates, check_labels
from qwick.tasks.prompts import Rendered, embedding_ids, render_gate, render_rerank
from qwick.tasks.spec import GENERATE_KINDS, LABEL_KINDS, GateSpec
from qwick.tokenizer import Tokenizer

T = TypeVar("T")
MAX_WARM_PREFIXES = 1024


class TaskEngine(Protocol):
    """What the gates need from an engine (a subset of `EngineClient`). `lora_request` is passed only for gates
    that name an adapter."""

    async def score(self, context_ids: list[int], continuations: list[list[int]], request_id: str, *,
                    lora_request: LoRARequest | None = None) -> ScoreOutput: ...

    async def embed(self, prompt_ids: list[int], request_id: str, *,
                    lora_request: LoRARequest | None = None) -> EmbeddingOutput: ...

    def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                 prompt: str | None = None, lora_request: LoRARequest | None = None) -> AsyncIterator[RequestDelta]: ...


class GateNotFoundError(KeyError):
    """The request named a gate this server does not define."""

    def __str__(self) -> str:
        return str(self.args[0])


class GateService:
    def __init__(self, engine: TaskEngine, tokenizer: Tokenizer, gates: Gates, identity: ModelIdentity,
                 ledger: Ledger | None = None, adapters: Mapping[str, LoRARequest] | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.adapters = dict(adapters or {})  # served LoRA adapters by name, for gates that name one
        gates.check_adapters(self.adapters)
        self.gates = gates
        self.identity = identity
        self.ledger = ledger
        self._adapter_digests: dict[str, str] = {}  # adapter name -> sha256 of its weights, for the ledger
        self._labels: dict[tuple[str, ...], list[list[int]]] = {}
        self._warm: dict[tuple[Any, ...], asyncio.Future[Any]] = {}  # (adapter, *prefix) -> its warm-up
        yes, no = tokenizer.encode("yes"), tokenizer.encode("no")
        assert len(yes) == len(no) == 1, "Qwen3's vocabulary has 'yes' and 'no' as single tokens"
        self._yes_no = [no, yes]

    def gate(self, name: str | None, kinds: tuple[str, ...]) -> GateSpec:
        """The named gate (default: the one named after the first kind), checked to be of one of `kinds`."""
        name = name or kinds[0]
        spec = self.gates.get(name)
        if spec is None:
            raise GateNotFoundError(f"no gate named {name!r}; this server defines: {', '.join(sorted(self.gates))}")
        if spec.kind not in kinds:
            raise ValueError(f"gate {name!r} is a {spec.kind} gate; this needs a {' or '.join(kinds)} gate")
        return spec

    # ------------------------------------------------------------------------------------ label gates
    async def moderate(self, text: str, gate: str | None = None, *, user_id: str | None = None,
                       request_id: str | None = None) -> Decision:
        return await self.label_gate(self.gate(gate, ("moderate",)), text, request_id, user_id)

    async def classify(self, text: str, labels: list[str] | None = None, gate: str | None = None, *,
                       request_id: str | None = None) -> Decision:
        spec = self.gate(gate, ("classify", "moderate"))
        if labels is not None:  # ad-hoc labels: the gate's instruction and rule, these labels
            spec = replace(spec, kind="classify", labels=tuple(labels))
            check_labels(spec, self.tokenizer)
        return await self.label_gate(spec, text, request_id)

    async def label_gate(self, spec: GateSpec, text: str, request_id: str | None,
                           user_id: str | None = None) -> Decision:
        rendered = render_gate(self.tokenizer, spec, _text(text))
        decision = Decision(spec.name, spec.kind, request_id or _new_id(spec.kind))
        continuations = self._label_ids(spec.labels)

        async def work() -> None:
            await self._warm_prefix(rendered.prefix_ids, spec)
            out = await self.engine.score(rendered.ids, continuations, _new_id(spec.kind), **self._adapter(spec))
            decide_labels(spec, decision, normalise(spec.labels, out.logprobs))

        await self._run(spec, decision, work(), [rendered], {"text": text}, user_id)
        return decision

    def _label_ids(self, labels: tuple[str, ...]) -> list[list[int]]:
        if labels not in self._labels:
            self._labels[labels] = [self.tokenizer.encode(label) for label in labels]
        return self._labels[labels]

    # ------------------------------------------------------------------------------------------ score
    async def score(self, query: str, items: list[str], gate: str | None = None, *, instruction: str | None = None,
                    request_id: str | None = None) -> Decision:
        """Relevance of each item to the query: P(yes) in Qwen3-Reranker's format, items batched."""
        spec = self.gate(gate, ("score",))
        instruct = instruction or spec.instruction
        rendered = [render_rerank(self.tokenizer, instruct, _text(query, "query"), _text(item, "items")) for item in items]
        decision = Decision(spec.name, spec.kind, request_id or _new_id("score"))

        async def work() -> None:
            if len(rendered) > 1:  # compute the shared head once, before the items fan out
                await self._warm_prefix(rendered[0].prefix_ids, spec, remember=False)
            outs = await asyncio.gather(*(self.engine.score(r.ids, self._yes_no, _new_id("score"), **self._adapter(spec))
                                          for r in rendered))
            decision.item_scores = [_p_yes(o.logprobs) for o in outs]

        inputs = {"query": query, "items": items, "instruction": instruction}
        await self._run(spec, decision, work(), rendered, inputs)
        return decision

    # ------------------------------------------------------------------------------- rewrite / extract
    async def rewrite(self, text: str, gate: str | None = None, *, request_id: str | None = None) -> Decision:
        return await self.generate_gate(self.gate(gate, ("rewrite", "extract")), text, request_id)

    async def generate_gate(self, spec: GateSpec, text: str, request_id: str | None = None) -> Decision:
        """Schema-constrained generation (greedy), parsed and validated against the gate's schema."""
        import jsonschema

        rendered = render_gate(self.tokenizer, spec, _text(text))
        decision = Decision(spec.name, spec.kind, request_id or _new_id(spec.kind))
        params = SamplingParams(temperature=0.0, max_tokens=spec.max_tokens,
                                structured_outputs=StructuredOutputsParams(json=spec.schema))

        async def work() -> None:
            final = None
            async for delta in self.engine.generate(rendered.ids, params, _new_id(spec.kind), rendered.text,
                                                    **self._adapter(spec)):
                final = delta.output if delta.finished else final
            if final is None or final.outputs[0].finish_reason == "abort":
                raise RuntimeError(f"the {spec.kind} request was aborted")
            out = final.outputs[0]
            decision.output_text, decision.output_tokens = out.text, len(out.token_ids)
            decision.output, decision.schema_valid = _parse(out.text, spec.schema, jsonschema)
            decision.escalate = not decision.schema_valid

        await self._run(spec, decision, work(), [rendered], {"text": text})
        return decision

    async def run_gate(self, name: str, text: str, *, request_id: str | None = None) -> Decision:
        """Any moderate, classify, rewrite or extract gate by name (the offline `llm.gate`)."""
        spec = self.gate(name, (*LABEL_KINDS, *GENERATE_KINDS))
        if spec.kind in LABEL_KINDS:
            return await self.label_gate(spec, text, request_id)
        return await self.generate_gate(spec, text, request_id)

    # ------------------------------------------------------------------------------------- embeddings
    async def embed(self, inputs: list[str | list[int]], dimensions: int | None = None,
                    lora_request: LoRARequest | None = None) -> tuple[list[list[float]], int]:
        """Last-token pooling, L2-normalised (Qwen3-Embedding); `dimensions` truncates then re-normalises (MRL);
        under `lora_request`'s adapter if given. Returns the vectors and the number of prompt tokens."""
        ids = [embedding_ids(self.tokenizer, x) if isinstance(x, str) else list(x) for x in inputs]
        outs = await asyncio.gather(*(self.engine.embed(i, _new_id("embd"), **adapter_kwargs(lora_request))
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
        return vectors, sum(len(i) for i in ids)

    # ---------------------------------------------------------------------------------------- helpers
    def _adapter(self, spec: GateSpec) -> dict[str, LoRARequest]:
        """Engine keywords for the gate's adapter (none for the base model)."""
        if spec.adapter is not None and spec.adapter not in self.adapters:  # gates swapped in after start-up
            raise ValueError(f"gate {spec.name!r}: adapter {spec.adapter!r} is not a served LoRA adapter")
        return adapter_kwargs(self.adapters[spec.adapter] if spec.adapter is not None else None)

    def adapter_sha256(self, name: str) -> str:
        """sha256 of a served adapter's weight files, computed once (the ledger's record of what decided)."""
        if name not in self._adapter_digests:
            self._adapter_digests[name] = adapter_weights_sha256(self.adapters[name].lora_path)
        return self._adapter_digests[name]

    async def _warm_prefix(self, prefix_ids: list[int], spec: GateSpec, remember: bool = True) -> None:
        """Prefill a shared prefix (a gate's instruction, a score request's query) before the requests that
        share it, so they reuse its blocks instead of each computing it in the same step (under the gate's
        adapter: cached blocks are per adapter). Concurrent first requests of a gate wait for the same warm-up."""
        if not prefix_ids:
            return
        key = (spec.adapter, *prefix_ids)
        warm = self._warm.get(key)
        if warm is None or (warm.done() and (warm.cancelled() or warm.exception() is not None)):
            warm = asyncio.ensure_future(self.engine.score(prefix_ids, [], _new_id("warm"), **self._adapter(spec)))
            if remember:  # gate prefixes: once per process (ad-hoc label sets make new ones, hence the cap)
                if len(self._warm) >= MAX_WARM_PREFIXES:
                    self._warm.clear()
                self._warm[key] = warm
        await asyncio.shield(warm)  # a caller's deadline must not cancel the warm-up others wait for

    async def _run(self, spec: GateSpec, decision: Decision, work: Awaitable[None], rendered: list[Rendered],
                   inputs: dict[str, Any], user_id: str | None = None) -> None:
        start = time.perf_counter()
        try:
            await _within(spec.deadline_ms, work)
        except asyncio.TimeoutError:  # the late engine work was cancelled, hence aborted
            timed_out(spec, decision)
        decision.latency_ms = (time.perf_counter() - start) * 1000
        decision.prompt_tokens = sum(len(r.ids) for r in rendered)
        decision.prompt_sha256 = sha256_text("\x1e".join(r.text for r in rendered))
        if self.ledger is not None:
            self.ledger.record(self._record(spec, decision, inputs, user_id))

    def _record(self, spec: GateSpec, decision: Decision, inputs: dict[str, Any], user_id: str | None) -> LedgerRecord:
        scores: Any = decision.item_scores if decision.item_scores is not None else decision.scores
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
            adapter_sha256=self.adapter_sha256(spec.adapter) if spec.adapter is not None else None)


async def _within(deadline_ms: float | None, work: Awaitable[T]) -> T:
    if deadline_ms is None:
        return await work
    return await asyncio.wait_for(work, deadline_ms / 1000)


def _p_yes(logprobs: list[float]) -> float:
    """softmax over [no, yes] at the answer position; the shared normaliser cancels, so this equals the
    softmax of the two logits."""
    no, yes = logprobs
    return 1.0 / (1.0 + math.exp(no - yes))


def _parse(text: str, schema: dict[str, Any] | None, jsonschema: Any) -> tuple[dict[str, Any] | None, bool]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None, False
    if not isinstance(value, dict):
        return None, False
    try:
        jsonschema.validate(value, schema or {})
    except jsonschema.ValidationError:
        return value, False
    return value, True


def _text(value: Any, name: str = "text") -> str:
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a string, got {type(value).__name__}")
    return value


def _new_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(8)}"
