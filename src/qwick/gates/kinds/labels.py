"""Label gates (moderate, classify): the exact probability of each label as the answer, then a rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qwick.gates.decisions import Decision, margin, normalise
from qwick.gates.kinds.base import GateKind, GateRunner, new_id, text_input
from qwick.gates.prompts import Rendered, render_gate
from qwick.gates.spec import GateSpec


class LabelKind(GateKind):
    """Scores every label as the continuation of the rendered prompt (one engine request, the prompt computed
    once) and normalises over the labels."""

    def render(self, runner: GateRunner, spec: GateSpec, inputs: Mapping[str, Any]) -> list[Rendered]:
        return [render_gate(runner.tokenizer, spec, text_input(inputs["text"]))]

    async def decide(self, runner: GateRunner, spec: GateSpec, rendered: list[Rendered], decision: Decision) -> None:
        (prompt,) = rendered
        continuations = runner.label_ids(spec.labels)
        await runner.warm_prefix(prompt.prefix_ids, spec)
        out = await runner.engine.continuation_logprobs(prompt.ids, continuations, new_id(spec.kind), **runner.adapter(spec))
        self.apply(spec, decision, normalise(spec.labels, out.logprobs))

    def apply(self, spec: GateSpec, decision: Decision, scores: dict[str, float]) -> Decision:
        """The decision rule over the label probabilities: top label, escalate on a small margin."""
        decision.scores = scores
        decision.label = max(scores, key=scores.__getitem__)
        decision.escalate = margin(scores) < spec.escalate_margin
        decision.summary = self.summary(decision)
        return decision

    def word(self, decision: Decision) -> str:
        return decision.label or ""

    def decided_by(self, spec: GateSpec, decision: Decision) -> dict[str, Any]:
        top = decision.label or ""
        return {"rule": "top label", "label": top, "p": decision.scores.get(top),
                "margin": margin(decision.scores), "escalate_margin": spec.escalate_margin}


class Moderate(LabelKind):
    """Allow iff P(safe_label) >= threshold; the reason is the top unsafe category."""

    name = "moderate"

    def apply(self, spec: GateSpec, decision: Decision, scores: dict[str, float]) -> Decision:
        decision.allow = scores[spec.safe_label] >= spec.threshold
        unsafe = {k: v for k, v in scores.items() if k != spec.safe_label}
        decision.reason = "none" if decision.allow else max(unsafe, key=unsafe.__getitem__)
        return super().apply(spec, decision, scores)

    def on_timeout(self, spec: GateSpec, decision: Decision) -> None:
        decision.allow = spec.on_timeout == "allow"
        decision.reason = "timeout"

    def word(self, decision: Decision) -> str:
        return decision.allow_word() or ""

    def decided_by(self, spec: GateSpec, decision: Decision) -> dict[str, Any]:
        return {"rule": f"allow iff P({spec.safe_label}) >= threshold", "label": spec.safe_label,
                "p": decision.scores.get(spec.safe_label), "threshold": spec.threshold,
                "decided": decision.allow_word(), "top_label": decision.label,
                "margin": margin(decision.scores), "escalate_margin": spec.escalate_margin}

    def response(self, decision: Decision, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"allow": decision.allow, "reason": decision.reason, "escalate": decision.escalate,
                "scores": decision.scores}


class Classify(LabelKind):
    name = "classify"

    def response(self, decision: Decision, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"label": None if decision.timed_out else decision.label, "scores": decision.scores,
                "escalate": decision.escalate}
