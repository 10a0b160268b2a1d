"""PipelineRunner: one pipeline run — steps in order, stop_if / route_on, per-step and whole deadlines with
their on_timeout policies, a ledger row per step under one trace id.

Deadlines: a step's `deadline_ms` replaces its gate's own deadline (the gate runs without one and the step's
`on_timeout` applies); without it the gate's deadline and policy decide, and the step reports `timed_out`.
The pipeline's `deadline_ms` bounds the whole run, routed-to pipelines included (each also keeps its own)."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from qwick.engine.client import EngineNotRunningError
from qwick.gates.ledger import StepTrace
from qwick.gates.service import GateService
from qwick.pipelines.loader import Pipelines
from qwick.pipelines.records import StepRow, error_row, step_record, timeout_row
from qwick.pipelines.results import PipelineResult, StepFailure, StepResult
from qwick.pipelines.retrieval import Retrieval
from qwick.pipelines.spec import SKIPPED, PipelineSpec, StepSpec
from qwick.pipelines.steps import Outcome, RunState, format_input, run_step


class UnknownPipelineError(KeyError):
    """The request named a pipeline the gates file does not declare."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class _Stop:
    """How a pipeline ended early: blocked by a step, or failed."""

    blocked_by: str | None = None
    error: StepFailure | None = None


class PipelineRunner:
    """Runs the pipelines of one gates file over a GateService (and a Retrieval, for retrieve and answer
    steps). Checks at construction what can only be checked with the model and the indexes at hand."""

    def __init__(self, service: GateService, pipelines: Pipelines, retrieval: Retrieval | None = None) -> None:
        pipelines.check_tokens(service.tokenizer)
        pipelines.check_retrieval(retrieval.index_names() if retrieval is not None else None)
        self.service = service
        self.pipelines = pipelines
        self.retrieval = retrieval

    def pipeline(self, name: str) -> PipelineSpec:
        spec = self.pipelines.get(name)
        if spec is None:
            known = ", ".join(sorted(self.pipelines)) or "none (declare them under 'pipelines:' in the gates file)"
            raise UnknownPipelineError(f"no pipeline named {name!r}; defined: {known}")
        return spec

    async def run(self, name: str, text: str, *, user_id: str | None = None, vars: dict[str, Any] | None = None,
                  client_request_id: str | None = None, trace_id: str | None = None) -> PipelineResult:
        """Run pipeline `name` on `text`. A failing step ends the run with `error` set (never raises for it);
        an unknown pipeline raises UnknownPipelineError, a bad argument ValueError."""
        spec = self.pipeline(name)
        if not isinstance(text, str):
            raise ValueError(f"'text' must be a string, got {type(text).__name__}")
        if vars is not None and not isinstance(vars, dict):
            raise ValueError(f"'vars' must be an object, got {type(vars).__name__}")
        state = RunState(trace_id or f"trace-{secrets.token_hex(8)}", text, dict(vars or {}), user_id, client_request_id)
        result = PipelineResult(state.trace_id, name)
        stop, output = await self._run(spec, state, result.steps, None, "")
        if stop is not None:
            result.blocked, result.blocked_by, result.error = stop.blocked_by is not None, stop.blocked_by, stop.error
        else:
            result.output = output
        return result

    async def _run(self, spec: PipelineSpec, state: RunState, steps: list[StepResult], outer_deadline: float | None,
                   prefix: str) -> tuple[_Stop | None, Any]:
        """(how it stopped early or None, the output). `outer_deadline`: the caller's end (monotonic)."""
        deadline = outer_deadline
        if spec.deadline_ms is not None:
            own = time.monotonic() + spec.deadline_ms / 1000
            deadline = own if deadline is None else min(deadline, own)
        output: Any = state.text
        i = 0
        while i < len(spec.steps):
            step = spec.steps[i]
            name = prefix + step.name
            left = None if deadline is None else deadline - time.monotonic()
            budget = _budget(step, left)
            trace = StepTrace(state.trace_id, spec.name, name, state.client_request_id)
            start = time.perf_counter()
            inputs = {"text": format_input(state) if step.kind == "format" else state.text}
            try:
                outcome = await _within(budget, run_step(_untimed(step), state, self.service, self.retrieval, trace))
            except asyncio.TimeoutError:
                by_pipeline = step.deadline_ms is None or (left is not None and left * 1000 < step.deadline_ms)
                policy = spec.on_timeout if by_pipeline else step.on_timeout
                self._record(step, trace, timeout_row(step, inputs, policy, "pipeline" if by_pipeline else "step"),
                             start, state)
                label = "allow" if policy == "allow" else SKIPPED
                steps.append(StepResult(name, step.kind, None, _ms(start), True, label))
                if policy == "fail":
                    return _Stop(error=StepFailure(name, f"step {name!r} missed the {'pipeline' if by_pipeline else 'step'}"
                                                         f"'s deadline ({(budget or 0) * 1000:.3g} ms)", "timeout")), None
                if policy == "deny":
                    return _Stop(blocked_by=name), None
                if by_pipeline:  # skip: the steps not yet run are skipped; the output so far stands
                    return None, output
                if policy == "skip":
                    i += 1
                    continue
                outcome = Outcome(None, "allow", state.text)
            except EngineNotRunningError:
                raise  # the server is going down: not this step's failure
            except Exception as exc:  # any step failure ends the run with an error naming the step
                message = f"step {name!r} ({step.kind}) failed: {exc}"
                self._record(step, trace, error_row(inputs, message), start, state)
                steps.append(StepResult(name, step.kind, None, _ms(start)))
                kind = "bad_input" if isinstance(exc, ValueError | LookupError) else "step_failed"
                return _Stop(error=StepFailure(name, message, kind)), None
            else:
                if outcome.row is not None:
                    self._record(step, trace, outcome.row, start, state)
                steps.append(StepResult(name, step.kind, outcome.output, _ms(start), outcome.timed_out, outcome.label))
            for key, value in outcome.updates.items():
                setattr(state, key, value)
            output = outcome.value
            label = outcome.label
            if label in step.stop_if:
                return _Stop(blocked_by=name), None
            if outcome.invalid is not None and label not in step.route_on:
                return _Stop(error=StepFailure(name, f"step {name!r} ({step.kind}) produced no valid JSON: "
                                                     f"{outcome.invalid}", "invalid_output")), None
            target = step.route_on.get(label) if label is not None else None
            if target is None:
                i += 1
            elif (j := spec.index_of(target)) is not None:
                i = j
            else:  # another pipeline takes over from here, in the same trace
                return await self._run(self.pipelines[target], state, steps, deadline, f"{prefix}{target}.")
        return None, output

    def _record(self, step: StepSpec, trace: StepTrace, row: StepRow, start: float, state: RunState) -> None:
        if self.service.ledger is not None:
            self.service.ledger.record(step_record(self.service.identity, step, trace, row, _ms(start), state.user_id))


def _budget(step: StepSpec, left: float | None) -> float | None:
    """Seconds the step may take: the smaller of its own deadline and what the pipeline has left."""
    own = step.deadline_ms / 1000 if step.deadline_ms is not None else None
    if own is None or left is None:
        return own if left is None else max(left, 0.0)
    return max(min(own, left), 0.0)


def _untimed(step: StepSpec) -> StepSpec:
    """A step with its own deadline runs its gate without the gate's (the step's policy applies instead)."""
    if step.deadline_ms is None or step.gate is None or step.gate.deadline_ms is None:
        return step
    return replace(step, gate=replace(step.gate, deadline_ms=None))


async def _within(seconds: float | None, work: Any) -> Any:
    """`work` under a deadline (a TimeoutError); a TimeoutError of the work itself is a failure, not a deadline."""
    if seconds is None:
        try:
            return await work
        except asyncio.TimeoutError as exc:
            raise RuntimeError(f"timed out: {exc or 'no detail'}") from exc
    return await asyncio.wait_for(work, seconds)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
