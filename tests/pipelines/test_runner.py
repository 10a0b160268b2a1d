"""Running pipelines on the tiny model: order, stop_if, route_on, per-step and whole deadlines with their
on_timeout policies, format output against its schema, retrieve/answer steps over a fake Retrieval."""

from __future__ import annotations

import time

import jsonschema
import pytest
from pipeline_fakes import FakeRetrieval

from qwick.engine.sync_engine import run_sync
from qwick.gates.loader import parse_gates
from qwick.pipelines.loader import PipelineFileError, parse_pipelines
from qwick.pipelines.runner import PipelineRunner, UnknownPipelineError

OK_SCHEMA = "{type: object, properties: {ok: {type: boolean}}, required: [ok], additionalProperties: false}"
FILE = f"""\
gates:
  - {{name: open, kind: moderate, instruction: "One of: {{labels}}", labels: [safe, unsafe], threshold: 0.0}}
  - {{name: closed, kind: moderate, instruction: "One of: {{labels}}", labels: [safe, unsafe], threshold: 1.0}}
  - name: hurry
    kind: moderate
    instruction: "One of: {{labels}}"
    labels: [safe, unsafe]
    deadline_ms: 0.001
    on_timeout: deny
  - {{name: topic, kind: classify, instruction: "One of: {{labels}}", labels: [sports, food]}}
pipelines:
  order:
    - {{name: first, kind: moderate, gate: open, stop_if: deny}}
    - {{name: second, kind: classify, gate: topic}}
    - {{name: third, kind: retrieve, index: docs, top_k: 2}}
    - {{name: fourth, kind: answer}}
  blocked:
    - {{name: guard, kind: moderate, gate: closed, stop_if: deny}}
    - {{name: never, kind: classify, gate: topic}}
  routed:
    - {{name: guard, kind: moderate, gate: open, route_on: {{allow: last}}}}
    - {{name: jumped, kind: classify, gate: topic}}
    - {{name: last, kind: retrieve, index: docs}}
  by_topic:
    - {{name: topic, kind: classify, gate: topic, route_on: {{sports: sports_desk, food: food}}}}
    - {{name: jumped, kind: moderate, gate: open}}
    - {{name: food, kind: retrieve, index: docs, top_k: 1}}
  sports_desk:
    - {{name: check, kind: moderate, gate: open}}
  slow_skip:
    - {{name: search, kind: retrieve, index: docs, deadline_ms: 50, on_timeout: skip}}
    - {{name: after, kind: moderate, gate: open}}
  slow_fail:
    - {{name: search, kind: retrieve, index: docs, deadline_ms: 50}}
  slow_deny:
    - {{name: search, kind: retrieve, index: docs, deadline_ms: 50, on_timeout: deny}}
  slow_whole:
    deadline_ms: 300
    on_timeout: skip
    steps:
      - {{name: search, kind: retrieve, index: docs}}
      - {{name: answer, kind: answer}}
      - {{name: never, kind: moderate, gate: open}}
  slow_whole_fail:
    deadline_ms: 100
    steps: [{{name: search, kind: retrieve, index: docs}}]
  gate_deadline:
    - {{name: guard, kind: moderate, gate: hurry, stop_if: deny}}
  step_deadline_allow:
    - {{name: guard, kind: moderate, gate: closed, deadline_ms: 0.001, on_timeout: allow, stop_if: deny}}
    - {{name: next, kind: classify, gate: topic}}
  formatted:
    - {{name: guard, kind: moderate, gate: open}}
    - {{name: search, kind: retrieve, index: docs, top_k: 2}}
    - {{name: reply, kind: format, max_tokens: 24, schema: {OK_SCHEMA}}}
  cut_short:
    - {{name: reply, kind: format, max_tokens: 1, schema: {OK_SCHEMA}}}
"""


def _runner(llm, retrieval=None, text=FILE, ledger=None) -> PipelineRunner:
    gates = parse_gates(text, "g.yaml")
    return PipelineRunner(llm.new_gates(gates, ledger).service, parse_pipelines(gates), retrieval or FakeRetrieval())


def _run(runner, name, text="where is the station", **kwargs):
    return run_sync(runner.run(name, text, **kwargs))


def test_steps_run_in_order_and_hand_on_text_and_hits(llm):
    retrieval = FakeRetrieval()
    result = _run(_runner(llm, retrieval), "order")
    assert [(s.name, s.kind) for s in result.steps] == [("first", "moderate"), ("second", "classify"),
                                                        ("third", "retrieve"), ("fourth", "answer")]
    assert not result.blocked and result.error is None and result.trace_id.startswith("trace-")
    first, second, third, fourth = result.steps
    assert first.label == "allow" and first.output["allow"] is True  # threshold 0: always allowed
    assert second.label in ("sports", "food") and second.label == second.output["label"]
    assert [h["id"] for h in third.output["hits"]] == ["doc0#0", "doc1#0"] and third.label == "found"
    (kind, args), (kind2, args2) = retrieval.calls
    assert (kind, args) == ("retrieve", ("docs", "where is the station", 2, "hybrid", False))
    assert kind2 == "answer" and [h.id for h in args2[3]] == ["doc0#0", "doc1#0"]  # the retrieved hits
    assert result.output == fourth.output and result.output["answer"] == "about where is the station [1]"
    assert all(s.latency_ms > 0 and not s.timed_out for s in result.steps)
    assert set(result.to_dict()) >= {"trace_id", "blocked", "output", "steps"}
    assert set(result.to_dict()["steps"][0]) >= {"name", "kind", "output", "latency_ms", "timed_out"}


def test_stop_if_deny_blocks_and_runs_nothing_after(llm):
    result = _run(_runner(llm), "blocked")
    assert result.blocked and result.blocked_by == "guard" and result.output is None
    assert [s.name for s in result.steps] == ["guard"] and result.steps[0].label == "deny"


def test_route_on_jumps_to_a_later_step(llm):
    result = _run(_runner(llm), "routed")
    assert [s.name for s in result.steps] == ["guard", "last"] and result.output == result.steps[-1].output["hits"]


def test_route_on_a_label_picks_the_step_or_pipeline_of_that_label(llm):
    runner = _runner(llm)
    for text in ("the match ended 2-1", "a bowl of ramen", "hello"):
        result = _run(runner, "by_topic", text)
        label = result.steps[0].label
        expected = ["topic", "sports_desk.check"] if label == "sports" else ["topic", "food"]
        assert [s.name for s in result.steps] == expected and result.error is None


def test_a_slow_step_past_its_deadline_is_skipped_failed_or_denied_by_its_policy(llm):
    slow = FakeRetrieval(delay=5.0)
    start = time.perf_counter()
    skipped = _run(_runner(llm, slow), "slow_skip")
    assert [(s.name, s.timed_out, s.label) for s in skipped.steps] == [("search", True, "skipped"),
                                                                       ("after", False, "allow")]
    assert skipped.steps[0].output is None and skipped.output == "where is the station"
    failed = _run(_runner(llm, slow), "slow_fail")
    assert failed.error.kind == "timeout" and failed.error.step == "search" and "deadline" in failed.error.message
    assert failed.output is None and not failed.blocked
    denied = _run(_runner(llm, slow), "slow_deny")
    assert denied.blocked and denied.blocked_by == "search"
    assert time.perf_counter() - start < 4.0  # none waited for the slow call


class SlowAnswers(FakeRetrieval):
    async def retrieve(self, *args, **kwargs):
        return self.chunks[:2]


def test_the_whole_pipeline_deadline_ends_the_run_by_its_policy(llm):
    slow = SlowAnswers(delay=5.0)
    start = time.perf_counter()
    result = _run(_runner(llm, slow), "slow_whole")  # on_timeout skip: the output so far
    assert [(s.name, s.timed_out) for s in result.steps] == [("search", False), ("answer", True)]
    assert not result.blocked and result.error is None and result.output == result.steps[0].output["hits"]
    failed = _run(_runner(llm, FakeRetrieval(delay=5.0)), "slow_whole_fail")
    assert failed.error.kind == "timeout" and "pipeline's deadline" in failed.error.message
    assert time.perf_counter() - start < 4.0


def test_a_gate_deadline_applies_the_gates_policy_and_a_step_deadline_the_steps(llm):
    runner = _runner(llm)
    result = _run(runner, "gate_deadline")  # the gate's own deadline: on_timeout deny
    assert result.blocked and result.steps[0].timed_out and result.steps[0].label == "deny"
    allowed = _run(runner, "step_deadline_allow")  # the step's deadline replaces the gate's: allow
    assert [(s.name, s.timed_out, s.label) for s in allowed.steps] == [("guard", True, "allow"),
                                                                       ("next", False, allowed.steps[1].label)]
    assert not allowed.blocked and allowed.error is None


def test_format_output_validates_against_its_schema(llm):
    gates = parse_gates(FILE, "g.yaml")
    schema = parse_pipelines(gates)["formatted"].steps[2].gate.schema
    result = _run(_runner(llm), "formatted", vars={"user": "ada"})
    reply = result.steps[-1]
    assert reply.label == "valid" and reply.output["schema_valid"] is True
    jsonschema.validate(result.output, schema)
    assert result.output == reply.output["data"]


def test_format_output_that_cannot_satisfy_the_schema_is_an_error_not_a_result(llm):
    result = _run(_runner(llm), "cut_short")
    assert result.error.kind == "invalid_output" and result.output is None
    assert result.steps[0].output["schema_valid"] is False and result.steps[0].label == "invalid"


def test_a_failing_step_ends_the_run_with_an_error_naming_it(llm):
    class Broken(FakeRetrieval):
        async def retrieve(self, *args, **kwargs):
            raise RuntimeError("the index file is gone")

    result = _run(_runner(llm, Broken()), "routed")
    assert result.error.step == "last" and "the index file is gone" in result.error.message
    assert result.error.kind == "step_failed" and [s.name for s in result.steps] == ["guard", "last"]


def test_retrieve_steps_without_a_retrieval_service_fail_at_start_up_naming_the_step(llm):
    gates = parse_gates(FILE, "g.yaml")
    service = llm.new_gates(gates).service
    with pytest.raises(PipelineFileError, match=r"g.yaml:15: pipeline 'order' step 'third' is a retrieve step: "
                                                r"it needs an index \(serve with --index"):
        PipelineRunner(service, parse_pipelines(gates), None)
    with pytest.raises(PipelineFileError, match=r"g.yaml:15: .* no index named 'docs'; served: other"):
        PipelineRunner(service, parse_pipelines(gates), FakeRetrieval(names=("other",)))


def test_unknown_pipelines_and_bad_arguments_are_named(llm):
    runner = _runner(llm)
    with pytest.raises(UnknownPipelineError, match="no pipeline named 'nope'; defined: blocked, by_topic"):
        _run(runner, "nope")
    with pytest.raises(ValueError, match="'vars' must be an object"):
        _run(runner, "blocked", vars=[1])
    with pytest.raises(ValueError, match="'text' must be a string"):
        _run(runner, "blocked", text=3)


def test_llm_pipeline_runs_a_pipeline_of_the_loaded_gates_file(llm, tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text(FILE.split("  order:")[0] + "  one:\n    - {name: guard, kind: moderate, gate: closed, "
                    "stop_if: deny}\n")
    llm.gates.load_gates(path)
    result = llm.pipeline("one", "hello")
    assert result.blocked and result.blocked_by == "guard"
