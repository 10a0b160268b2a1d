"""Ledger rows of the pipeline steps the gate service does not write itself: retrieve and answer steps, and
any step that missed its deadline or failed (its gate's work was cancelled before it could record)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from qwick.gates.identity import ModelIdentity
from qwick.gates.ledger import LedgerRecord, StepTrace, sha256_text, trace_fields
from qwick.pipelines.spec import StepSpec


@dataclass
class StepRow:
    """What a step adds to the common fields of its row."""

    decision: str
    inputs: dict[str, Any]
    output_text: str | None = None
    scores: Any = None
    rule: Any = None
    params: Any = None
    timed_out: bool = False


def step_record(identity: ModelIdentity, step: StepSpec, trace: StepTrace, row: StepRow, latency_ms: float,
                user_id: str | None) -> LedgerRecord:
    gate = step.gate
    return LedgerRecord(
        request_id=f"{trace.trace_id}.{trace.step}", ts=time.time(), kind=gate.kind if gate else step.kind,
        gate=gate.name if gate else None, model=identity.model, revision=identity.revision,
        weights_sha256=identity.weights_sha256, prompt_sha256=sha256_text(json.dumps(row.inputs, sort_keys=True)),
        output_sha256=sha256_text(json.dumps([row.decision, row.output_text, row.scores], sort_keys=True)),
        decision=row.decision, escalate=False, timed_out=row.timed_out, scores=row.scores, schema_valid=None,
        latency_ms=latency_ms, prompt_tokens=0, output_tokens=0, gate_config=gate.to_json() if gate else None,
        user_sha256=sha256_text(user_id) if user_id is not None else None, input=row.inputs,
        output_text=row.output_text, adapter=gate.adapter if gate else None, rule=row.rule, params=row.params,
        **trace_fields(trace))


def retrieve_row(step: StepSpec, query: str, hits: list[Any]) -> StepRow:
    ids = [{"id": h.id, "score": h.score} for h in hits]
    return StepRow("found" if hits else "empty", {"query": query}, json.dumps(ids, ensure_ascii=False),
                   scores=[h.score for h in hits], rule={"rule": f"top {step.top_k} by {step.mode} search"
                                                                 + (", reranked" if step.rerank else "")},
                   params={"index": step.index, "top_k": step.top_k, "mode": step.mode, "rerank": step.rerank})


def answer_row(step: StepSpec, question: str, hits: list[Any] | None, answer: Any) -> StepRow:
    cited = [c.get("id") for c in answer.citations]
    return StepRow("answered", {"question": question, "hits": [h.id for h in hits] if hits is not None else None},
                   answer.answer, rule={"rule": "grounded answer; citations name retrieved chunks", "cited": cited},
                   params={"index": step.index, "top_k": step.top_k, **(step.params or {})})


def timeout_row(step: StepSpec, inputs: dict[str, Any], policy: str, deadline: str) -> StepRow:
    return StepRow(f"timeout:{policy}", inputs, timed_out=True,
                   rule={"rule": "timeout", "deadline": deadline, "deadline_ms": step.deadline_ms, "on_timeout": policy})


def error_row(inputs: dict[str, Any], message: str) -> StepRow:
    return StepRow("error", inputs, message, rule={"rule": "error", "message": message})
