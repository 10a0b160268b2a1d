"""StepSpec and PipelineSpec: a pipeline as the gates file declares it, validated (qwick.pipelines.loader)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qwick.gates.spec import GateSpec

GATE_STEPS = ("moderate", "classify", "rewrite", "extract")  # a gate by name or inline
STEP_KINDS = (*GATE_STEPS, "retrieve", "answer", "format")
RETRIEVAL_STEPS = ("retrieve", "answer")  # need a Retrieval (`qwick serve --index`)
# on a missed step deadline: fail the pipeline, skip the step (its input passes on), count a moderate step as
# allowed (label "allow"), or block the pipeline
STEP_TIMEOUTS = ("fail", "skip", "allow", "deny")
# on a missed whole-pipeline deadline: fail, skip the steps not yet done (the output so far), or block
PIPELINE_TIMEOUTS = ("fail", "skip", "deny")
RETRIEVE_MODES = ("hybrid", "vector", "bm25")
SKIPPED = "skipped"  # the label of a step skipped on timeout (no condition matches it)


class PipelineError(ValueError):
    """A pipeline definition is invalid, or cannot run here (a retrieve step without an index service)."""


@dataclass(frozen=True)
class StepSpec:
    """One step. Gate steps (and format, whose JSON comes from an extract gate made from its schema) carry
    their GateSpec; retrieve and answer steps their index settings."""

    name: str
    kind: str
    line: int = 0  # in the gates file
    gate: GateSpec | None = None
    stop_if: tuple[str, ...] = ()  # labels that stop the pipeline (blocked)
    route_on: dict[str, str] = field(default_factory=dict)  # label -> a later step of this pipeline, or a pipeline
    deadline_ms: float | None = None  # None: the gate's own deadline (gate steps), else none
    on_timeout: str = "fail"
    index: str | None = None  # retrieve / answer
    top_k: int = 10
    mode: str = "hybrid"
    rerank: bool = False
    params: dict[str, Any] | None = None  # answer: passed on to the retrieval service
    lines: dict[str, int] = field(default_factory=dict)  # field -> line

    def labels(self) -> tuple[str, ...]:
        """The labels this step can end with: what stop_if and route_on may name."""
        if self.kind == "moderate":
            return ("allow", "deny")
        if self.kind == "classify":
            assert self.gate is not None
            return self.gate.labels
        if self.kind == "retrieve":
            return ("found", "empty")
        if self.kind == "answer":
            return ("answered",)
        return ("valid", "invalid")

    def line_of(self, name: str) -> int:
        return self.lines.get(name, self.line)


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    steps: tuple[StepSpec, ...]
    deadline_ms: float | None = None
    on_timeout: str = "fail"
    description: str = ""
    line: int = 0

    def index_of(self, step: str) -> int | None:
        return next((i for i, s in enumerate(self.steps) if s.name == step), None)
