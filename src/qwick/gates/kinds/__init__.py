"""The gate kinds, one class each, registered in GATE_KINDS (a gate's `kind` names its entry).

A new kind: a GateKind subclass (its own module here: render, decide, word, response), one entry below, and
the fields a gate file may give it in qwick.gates.spec.KIND_RULES."""

from __future__ import annotations

from qwick.gates.kinds.base import GateKind
from qwick.gates.kinds.generate import Extract, Rewrite
from qwick.gates.kinds.labels import Classify, Moderate
from qwick.gates.kinds.score import Score

GATE_KINDS: dict[str, GateKind] = {kind.name: kind for kind in (Moderate(), Classify(), Rewrite(), Score(), Extract())}
TEXT_KINDS = tuple(name for name, kind in GATE_KINDS.items() if kind.takes_text)  # what `llm.gate` runs
