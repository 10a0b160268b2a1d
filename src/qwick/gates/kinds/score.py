"""The score gate: relevance of each item to a query, P(yes) in Qwen3-Reranker's format, items batched."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from qwick.gates.decisions import Decision
from qwick.gates.kinds.base import GateKind, GateRunner, new_id, text_input
from qwick.gates.prompts import Rendered, render_rerank
from qwick.gates.spec import GateSpec


class Score(GateKind):
    """Inputs {"query", "items", "instruction"} (instruction: None for the gate's own)."""

    name = "score"
    takes_text = False

    def render(self, runner: GateRunner, spec: GateSpec, inputs: Mapping[str, Any]) -> list[Rendered]:
        instruct = inputs.get("instruction") or spec.instruction
        query = text_input(inputs["query"], "query")
        return [render_rerank(runner.tokenizer, instruct, query, text_input(item, "items")) for item in inputs["items"]]

    async def decide(self, runner: GateRunner, spec: GateSpec, rendered: list[Rendered], decision: Decision) -> None:
        if len(rendered) > 1:  # compute the shared head once, before the items fan out
            await runner.warm_prefix(rendered[0].prefix_ids, spec, remember=False)
        outs = await asyncio.gather(*(runner.engine.continuation_logprobs(r.ids, runner.yes_no, new_id("score"), **runner.adapter(spec))
                                      for r in rendered))
        decision.item_scores = [_p_yes(o.logprobs) for o in outs]

    def word(self, decision: Decision) -> str:
        return "scored"

    def decided_by(self, spec: GateSpec, decision: Decision) -> dict[str, Any]:
        return {"rule": "P(yes) per item (Qwen3-Reranker)", "items": len(decision.item_scores or [])}

    def ledger_scores(self, decision: Decision) -> Any:
        # a timed-out score request has no item scores: it records {} like a timed-out label gate
        return decision.item_scores if decision.item_scores is not None else decision.scores

    def response(self, decision: Decision, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"scores": decision.item_scores}


def _p_yes(logprobs: list[float]) -> float:
    """softmax over [no, yes] at the answer position; the shared normaliser cancels, so this equals the
    softmax of the two logits."""
    no, yes = logprobs
    return 1.0 / (1.0 + math.exp(no - yes))
