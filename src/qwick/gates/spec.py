"""GateSpec: one declarative gate (name, kind, prompt, labels, decision rule, deadline), validated once."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class KindRules:
    """What a gate of one kind declares, checked when its GateSpec is made (its behaviour: qwick.gates.kinds)."""

    labels: bool = False  # decided by exact label probabilities: needs `labels`
    safe_label: bool = False  # `safe_label` must be one of the labels
    schema: bool = False  # decided by schema-constrained generation: needs `schema`, may think first
    text: bool = True  # the template holds the request's {text}


KIND_RULES = {
    "moderate": KindRules(labels=True, safe_label=True),
    "classify": KindRules(labels=True),
    "rewrite": KindRules(schema=True),
    "score": KindRules(text=False),  # a query and items, in Qwen3-Reranker's format
    "extract": KindRules(schema=True),
}
KINDS = tuple(KIND_RULES)
TIMEOUT_POLICIES = ("allow", "deny", "escalate")


class GateError(ValueError):
    """A gate definition is invalid; the message names the gate and the field (`field`, for line lookups)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class GateSpec:
    """A gate. `instruction` is the system message ({labels} is replaced by the label list); `template` is the
    user message ({text} is the request's text). The answer follows the assistant header with thinking off."""

    name: str
    kind: str
    instruction: str
    template: str = "{text}"
    labels: tuple[str, ...] = ()
    safe_label: str = "safe"  # moderate: the category meaning "allowed"
    threshold: float = 0.5  # moderate: allow iff P(safe_label) >= threshold
    escalate_margin: float = 0.0  # escalate when top-1 minus top-2 probability is below this
    deadline_ms: float | None = None  # None: no deadline
    on_timeout: str = "escalate"
    thinking: bool = False
    schema: dict[str, Any] | None = None  # rewrite / extract: JSON schema of the answer
    max_tokens: int = 256  # rewrite / extract: answer length cap
    description: str = ""
    adapter: str | None = None  # a LoRA adapter's served name (`--lora-modules NAME=PATH`): run under it

    def __post_init__(self) -> None:
        where = f"gate {self.name!r}"
        if not isinstance(self.name, str) or not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise GateError(f"gate name must be a non-empty string of letters, digits, '-' or '_', got {self.name!r}", "name")
        if self.kind not in KIND_RULES:
            raise GateError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}", "kind")
        rules = KIND_RULES[self.kind]
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise GateError(f"{where}: instruction must be a non-empty string", "instruction")
        if not isinstance(self.template, str) or (rules.text and "{text}" not in self.template):
            raise GateError(f"{where}: template must be a string containing {{text}}, got {self.template!r}", "template")
        self._check_labels(where, rules)
        for name in ("threshold", "escalate_margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise GateError(f"{where}: {name} must be a number in [0, 1], got {value!r}", name)
        if self.deadline_ms is not None and (
            isinstance(self.deadline_ms, bool) or not isinstance(self.deadline_ms, int | float)
            or not math.isfinite(self.deadline_ms) or self.deadline_ms <= 0
        ):
            raise GateError(f"{where}: deadline_ms must be a positive number (or null for none), got {self.deadline_ms!r}", "deadline_ms")
        if self.on_timeout not in TIMEOUT_POLICIES:
            raise GateError(f"{where}: on_timeout must be one of {', '.join(TIMEOUT_POLICIES)}, got {self.on_timeout!r}", "on_timeout")
        if not isinstance(self.thinking, bool):
            raise GateError(f"{where}: thinking must be true or false, got {self.thinking!r}", "thinking")
        if self.thinking and not rules.schema:  # labels are scored right after the prompt
            raise GateError(f"{where}: thinking: true is only supported by {_kinds_with('schema')} gates", "thinking")
        if rules.schema and not isinstance(self.schema, dict):
            raise GateError(f"{where}: a {self.kind} gate needs a JSON schema object in 'schema'", "schema")
        if self.adapter is not None and (not isinstance(self.adapter, str) or not self.adapter.strip()):
            raise GateError(f"{where}: adapter must be the name of a served LoRA adapter (or null for the base "
                            f"model), got {self.adapter!r}", "adapter")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise GateError(f"{where}: max_tokens must be a positive integer, got {self.max_tokens!r}", "max_tokens")

    def _check_labels(self, where: str, rules: KindRules) -> None:
        if not rules.labels:
            if self.labels:
                raise GateError(f"{where}: labels only apply to {_kinds_with('labels')} gates", "labels")
            return
        if len(self.labels) < 2 or not all(isinstance(x, str) and x.strip() for x in self.labels):
            raise GateError(f"{where}: labels must list at least two non-empty strings, got {list(self.labels)!r}", "labels")
        if len(set(self.labels)) != len(self.labels):
            raise GateError(f"{where}: labels must be distinct, got {list(self.labels)!r}", "labels")
        if rules.safe_label and self.safe_label not in self.labels:
            raise GateError(f"{where}: safe_label {self.safe_label!r} must be one of the labels {list(self.labels)!r}", "labels")

    def system_prompt(self, labels: tuple[str, ...] | None = None) -> str:
        return self.instruction.replace("{labels}", ", ".join(labels or self.labels))

    def to_json(self) -> str:
        """The definition as recorded in the ledger (stable key order)."""
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GateSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise GateError(f"gate {raw.get('name', '?')!r}: unknown field(s) {', '.join(unknown)}; "
                            f"known fields: {', '.join(sorted(known))}", unknown[0])
        if "name" not in raw or "kind" not in raw or "instruction" not in raw:
            raise GateError(f"gate {raw.get('name', '?')!r}: 'name', 'kind' and 'instruction' are required")
        data = dict(raw)
        if "labels" in data:
            if not isinstance(data["labels"], list):
                raise GateError(f"gate {raw['name']!r}: labels must be a list, got {data['labels']!r}", "labels")
            data["labels"] = tuple(data["labels"])
        return cls(**data)


def _kinds_with(rule: str) -> str:
    return " and ".join(kind for kind, rules in KIND_RULES.items() if getattr(rules, rule))
