"""What each step kind does: run its gate (or format's extract gate) through the GateService, or call the
Retrieval; returns the step's Outcome. The runner (runner.py) handles order, conditions and deadlines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from qwick.gates.kinds import GATE_KINDS
from qwick.gates.ledger import StepTrace
from qwick.gates.service import GateService
from qwick.pipelines.records import StepRow, answer_row, retrieve_row
from qwick.pipelines.retrieval import Retrieval
from qwick.pipelines.spec import StepSpec


@dataclass
class RunState:
    """What flows between the steps of one run: the current text, the caller's vars (plus extract steps'
    data, by step name), the last retrieve step's hits."""

    trace_id: str
    text: str
    vars: dict[str, Any]
    user_id: str | None = None
    client_request_id: str | None = None
    hits: list[Any] | None = None


@dataclass
class Outcome:
    output: Any  # the step's answer (StepResult.output)
    label: str | None
    value: Any  # the pipeline's output if this step is the last
    timed_out: bool = False  # the gate's own deadline passed (its on_timeout policy decided)
    row: StepRow | None = None  # a ledger row to write (gate steps: the gate service wrote it)
    invalid: str | None = None  # format: why the JSON does not satisfy the schema
    updates: dict[str, Any] = field(default_factory=dict)  # RunState fields to set


async def run_step(step: StepSpec, state: RunState, service: GateService, retrieval: Retrieval | None,
                   trace: StepTrace) -> Outcome:
    if step.kind == "retrieve":
        assert retrieval is not None and step.index is not None  # checked at start-up
        hits = await retrieval.retrieve(step.index, state.text, step.top_k, step.mode, step.rerank)
        out = [h.to_dict() for h in hits]
        return Outcome({"query": state.text, "hits": out}, "found" if hits else "empty", out,
                       row=retrieve_row(step, state.text, hits), updates={"hits": hits})
    if step.kind == "answer":
        assert retrieval is not None and step.index is not None
        answer = await retrieval.answer(step.index, state.text, step.top_k, state.hits, step.params)
        out = answer.to_dict()
        return Outcome(out, "answered", out, row=answer_row(step, state.text, state.hits, answer),
                       updates={"text": answer.answer})
    return await _gate_step(step, state, service, trace)


async def _gate_step(step: StepSpec, state: RunState, service: GateService, trace: StepTrace) -> Outcome:
    assert step.gate is not None
    text = format_input(state) if step.kind == "format" else state.text
    decision = await service.run(step.gate, {"text": text}, f"{state.trace_id}.{trace.step}", state.user_id, trace)
    response = GATE_KINDS[step.gate.kind].response(decision, {"text": text})
    if step.kind == "moderate":
        label = decision.allow_word()
        return Outcome({**response, "label": label}, label, state.text, decision.timed_out)
    if step.kind == "classify":
        return Outcome(response, response["label"], state.text, decision.timed_out)
    label = "valid" if decision.schema_valid else "invalid"
    if step.kind == "rewrite":
        return Outcome(response, label, response["rewrite"], decision.timed_out, updates={"text": response["rewrite"]})
    data = decision.output if decision.schema_valid else None
    invalid = None
    if not decision.schema_valid:
        invalid = ("it missed the gate's deadline" if decision.timed_out else
                   f"its output does not validate against the schema (output: {decision.output_text!r})")
    if step.kind == "extract":
        return Outcome(response, label, data, decision.timed_out, invalid=invalid,
                       updates={"vars": {**state.vars, step.name: data}})
    return Outcome({"data": data, "schema_valid": decision.schema_valid}, label, data, decision.timed_out,
                   invalid=invalid)


def format_input(state: RunState) -> str:
    """The user message of a format step: the current text, the retrieved passages, the vars as JSON."""
    parts = [state.text]
    if state.hits:
        parts.append("Retrieved passages:\n" + "\n".join(f"[{h.id}] {h.text}" for h in state.hits))
    if state.vars:
        parts.append("Variables (JSON): " + json.dumps(state.vars, ensure_ascii=False, sort_keys=True))
    return "\n\n".join(parts)
