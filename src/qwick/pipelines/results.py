"""StepResult and PipelineResult: one pipeline run, as the endpoint, `llm.pipeline` and the CLI return it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepResult:
    name: str  # a routed-to pipeline's steps are named "pipeline.step"
    kind: str
    output: Any  # the step's own answer (None when it was skipped or failed)
    latency_ms: float
    timed_out: bool = False
    label: str | None = None  # what stop_if / route_on matched against

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "output": self.output, "latency_ms": round(self.latency_ms, 3),
                "timed_out": self.timed_out, "label": self.label}


@dataclass
class StepFailure:
    step: str
    message: str
    kind: str = "step_failed"  # bad_input (e.g. too long for the context) | timeout | invalid_output | step_failed


@dataclass
class PipelineResult:
    """`output`: the last step's result (the text after moderate/classify/rewrite, the data of extract/format,
    the hits of retrieve, the answer of answer); None when blocked or failed."""

    trace_id: str
    pipeline: str
    blocked: bool = False
    output: Any = None
    steps: list[StepResult] = field(default_factory=list)
    blocked_by: str | None = None  # the step that stopped the run
    error: StepFailure | None = None

    def to_dict(self) -> dict[str, Any]:
        error = None if self.error is None else {"step": self.error.step, "message": self.error.message,
                                                 "type": self.error.kind}
        return {"trace_id": self.trace_id, "pipeline": self.pipeline, "blocked": self.blocked, "output": self.output,
                "blocked_by": self.blocked_by, "error": error, "steps": [s.to_dict() for s in self.steps]}
