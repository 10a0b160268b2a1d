"""Generation gates (rewrite, extract): schema-constrained generation (greedy), parsed and validated against
the gate's schema."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qwick.gates.decisions import Decision
from qwick.gates.kinds.base import GateKind, GateRunner, new_id, text_input
from qwick.gates.prompts import Rendered, render_gate
from qwick.gates.spec import GateSpec
from qwick.sampling_params import SamplingParams, StructuredOutputsParams


class GenerateKind(GateKind):
    def render(self, runner: GateRunner, spec: GateSpec, inputs: Mapping[str, Any]) -> list[Rendered]:
        return [render_gate(runner.tokenizer, spec, text_input(inputs["text"]))]

    async def decide(self, runner: GateRunner, spec: GateSpec, rendered: list[Rendered], decision: Decision) -> None:
        import jsonschema

        (prompt,) = rendered
        params = SamplingParams(temperature=0.0, max_tokens=spec.max_tokens,
                                structured_outputs=StructuredOutputsParams(json=spec.schema))
        final = None
        async for delta in runner.engine.generate(prompt.ids, params, new_id(spec.kind), prompt.text,
                                                  **runner.adapter(spec)):
            final = delta.output if delta.finished else final
        if final is None or final.outputs[0].finish_reason == "abort":
            raise RuntimeError(f"the {spec.kind} request was aborted")
        out = final.outputs[0]
        decision.output_text, decision.output_tokens = out.text, len(out.token_ids)
        decision.output, decision.schema_valid = _parse(out.text, spec.schema, jsonschema)
        decision.escalate = not decision.schema_valid

    def word(self, decision: Decision) -> str:
        return "valid" if decision.schema_valid else "invalid"

    def decided_by(self, spec: GateSpec, decision: Decision) -> dict[str, Any]:
        return {"rule": "the answer validates against the gate's schema", "schema_valid": decision.schema_valid,
                "max_tokens": spec.max_tokens}


class Rewrite(GenerateKind):
    name = "rewrite"

    def response(self, decision: Decision, inputs: Mapping[str, Any]) -> dict[str, Any]:
        output = decision.output if decision.schema_valid else None
        text = inputs["text"]
        # without a valid answer (timeout, invalid output) the query passes through unchanged
        return {"rewrite": output.get("rewrite", text) if output else text,
                "reason_code": output.get("reason_code") if output else ("timeout" if decision.timed_out
                                                                         else "invalid_output"),
                "output": output, "schema_valid": decision.schema_valid, "escalate": decision.escalate}


class Extract(GenerateKind):
    name = "extract"

    def response(self, decision: Decision, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"data": decision.output if decision.schema_valid else None, "schema_valid": decision.schema_valid,
                "escalate": decision.escalate}


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
