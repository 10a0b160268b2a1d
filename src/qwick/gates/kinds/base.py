"""GateKind: what one kind of gate does (render its prompt, decide through the engine client, summarise the
Decision for the ledger and the HTTP response), and GateRunner, what a kind may use of the GateService."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from qwick.engine.client import EngineClient
from qwick.gates.decisions import Decision
from qwick.gates.prompts import Rendered
from qwick.gates.spec import GateSpec
from qwick.lora.request import LoRARequest
from qwick.tokenizer import Tokenizer


class GateRunner(Protocol):
    """The GateService as its kinds see it: the engine client, the tokenizer and the shared caches."""

    engine: EngineClient
    tokenizer: Tokenizer
    yes_no: list[list[int]]  # the tokens of "no" and "yes" (relevance)

    def label_ids(self, labels: tuple[str, ...]) -> list[list[int]]: ...

    async def warm_prefix(self, prefix_ids: list[int], spec: GateSpec, remember: bool = True) -> None: ...

    def adapter(self, spec: GateSpec) -> dict[str, LoRARequest]: ...


class GateKind:
    """One kind of gate. `render` runs before the deadline starts, `decide` (the engine work) under it; on a
    missed deadline `time_out` applies the gate's `on_timeout` policy instead."""

    name: ClassVar[str]
    takes_text: ClassVar[bool] = True  # its input is {"text"} (so `llm.gate(name, text)` runs it)

    def render(self, runner: GateRunner, spec: GateSpec, inputs: Mapping[str, Any]) -> list[Rendered]:
        raise NotImplementedError

    async def decide(self, runner: GateRunner, spec: GateSpec, rendered: list[Rendered], decision: Decision) -> None:
        raise NotImplementedError

    def time_out(self, spec: GateSpec, decision: Decision) -> Decision:
        """The gate's `on_timeout` policy: allow, deny, or escalate (not allowed, sent to the slow path)."""
        decision.timed_out = True
        decision.escalate = spec.on_timeout == "escalate"
        self.on_timeout(spec, decision)
        decision.summary = self.summary(decision)
        return decision

    def on_timeout(self, spec: GateSpec, decision: Decision) -> None:
        """What this kind adds to a timed-out decision (moderation: allow and reason)."""

    def summary(self, decision: Decision) -> str:
        """The decision in one word, as the ledger records it."""
        if decision.timed_out:
            return "timeout:" + ("escalate" if decision.escalate else decision.allow_word() or "none")
        return self.word(decision)

    def word(self, decision: Decision) -> str:
        raise NotImplementedError

    def rule(self, spec: GateSpec, decision: Decision) -> dict[str, Any]:
        """Which rule decided, for the ledger: a timeout's policy here, each kind's own rule otherwise."""
        if decision.timed_out:
            return {"rule": "timeout", "deadline_ms": spec.deadline_ms, "on_timeout": spec.on_timeout}
        return self.decided_by(spec, decision)

    def decided_by(self, spec: GateSpec, decision: Decision) -> dict[str, Any]:
        return {"rule": self.name}

    def ledger_scores(self, decision: Decision) -> Any:
        """The scores the ledger records (and replay compares)."""
        return decision.scores

    def response(self, decision: Decision, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The kind's fields of its endpoint's JSON answer (the common ones: server/gates.py gate_json)."""
        raise NotImplementedError


def new_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(8)}"


def text_input(value: Any, name: str = "text") -> str:
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a string, got {type(value).__name__}")
    return value
