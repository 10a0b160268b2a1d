"""Decision: one gate answer (all kinds; the kinds fill their fields, qwick.gates.kinds), and label maths."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Decision:
    """One gate answer. Fields a kind does not use stay None (e.g. `allow` outside moderation)."""

    gate: str
    kind: str
    request_id: str
    scores: dict[str, float] = field(default_factory=dict)  # label -> probability (label gates)
    label: str | None = None  # top label
    allow: bool | None = None  # moderate
    reason: str | None = None  # moderate: top unsafe category, "none" when allowed, "timeout" on a timeout
    escalate: bool = False
    timed_out: bool = False
    item_scores: list[float] | None = None  # score: P(yes) per item
    output: dict[str, Any] | None = None  # rewrite / extract: the parsed JSON answer
    output_text: str | None = None  # rewrite / extract: the raw answer
    schema_valid: bool | None = None  # rewrite / extract: the answer validates against the gate's schema
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    prompt_sha256: str = ""  # of the rendered prompt(s)
    summary: str = ""  # the decision in one word, as the ledger records it (the gate's kind words it)

    def allow_word(self) -> str | None:
        return None if self.allow is None else ("allow" if self.allow else "deny")


def normalise(labels: tuple[str, ...], logprobs: list[float]) -> dict[str, float]:
    """Softmax over the labels' total sequence logprobs: P(label | the answer is one of the labels)."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return {label: w / total for label, w in zip(labels, weights, strict=True)}


def margin(scores: dict[str, float]) -> float:
    ordered = sorted(scores.values(), reverse=True)
    return ordered[0] - ordered[1] if len(ordered) > 1 else 1.0
