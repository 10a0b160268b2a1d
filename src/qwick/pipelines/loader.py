"""The `pipelines:` section of a gates file -> Pipelines, every problem reported as `path:line: what is wrong`.

    pipelines:
      support:
        deadline_ms: 3000            # optional, the whole run; on_timeout: fail (default) | skip | deny
        steps:
          - {kind: moderate, gate: strict, stop_if: deny}        # a gate of the file (or a built-in) by name
          - {name: intent, kind: classify, labels: [question, other], instruction: "One of: {labels}",
             route_on: {other: small_talk}}                      # an inline gate; small_talk: a pipeline
          - {kind: rewrite, deadline_ms: 500, on_timeout: skip}
          - {kind: retrieve, index: docs, top_k: 5, mode: hybrid}
          - {kind: format, schema: {type: object, ...}}
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import fields, replace
from typing import Any

from qwick.gates.loader import Gates, check_labels, check_schema
from qwick.gates.spec import GateError, GateSpec
from qwick.pipelines.spec import (
    GATE_STEPS,
    PIPELINE_TIMEOUTS,
    RETRIEVAL_STEPS,
    RETRIEVE_MODES,
    STEP_KINDS,
    STEP_TIMEOUTS,
    PipelineError,
    PipelineSpec,
    StepSpec,
)
from qwick.tokenizer import Tokenizer

COMMON_FIELDS = ("name", "kind", "stop_if", "route_on", "deadline_ms", "on_timeout", "description")
# what a gate step may give inline (the gate's own deadline is the step's: deadline_ms / on_timeout above)
INLINE_GATE_FIELDS = tuple(f.name for f in fields(GateSpec) if f.name not in ("name", "kind", "deadline_ms",
                                                                               "on_timeout", "description"))
KIND_FIELDS = {
    **{kind: ("gate", *INLINE_GATE_FIELDS) for kind in GATE_STEPS},
    "retrieve": ("index", "top_k", "mode", "rerank"),
    "answer": ("index", "top_k", "params"),
    "format": ("schema", "instruction", "max_tokens"),
}
FORMAT_INSTRUCTION = ("Write one JSON object that matches this JSON schema, using only information from the "
                      "input:\n{schema}")
PIPELINE_FIELDS = ("steps", "deadline_ms", "on_timeout", "description")


class PipelineFileError(PipelineError):
    """An invalid `pipelines:` section; the message starts with `path:line:`."""


class Pipelines(Mapping[str, PipelineSpec]):
    """Pipelines by name, as one gates file declares them."""

    def __init__(self, specs: dict[str, PipelineSpec], source: str = "<none>") -> None:
        self._specs = specs
        self.source = source

    def __getitem__(self, name: str) -> PipelineSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def steps(self) -> Iterator[tuple[PipelineSpec, StepSpec]]:
        for pipeline in self._specs.values():
            for step in pipeline.steps:
                yield pipeline, step

    def check_tokens(self, tokenizer: Tokenizer) -> None:
        """Inline label gates: no label may tokenize to a prefix of another (as Gates.check_tokens)."""
        for pipeline, step in self.steps():
            if step.gate is not None and step.gate.labels:
                try:
                    check_labels(step.gate, tokenizer)
                except GateError as exc:
                    raise self.error(step.line_of("labels"), f"pipeline {pipeline.name!r} step {step.name!r}: {exc}") from None

    def check_retrieval(self, index_names: list[str] | None) -> None:
        """Retrieve and answer steps need a retrieval service (None: there is none) that serves their index."""
        for pipeline, step in self.steps():
            if step.kind not in RETRIEVAL_STEPS:
                continue
            where = f"pipeline {pipeline.name!r} step {step.name!r}"
            if index_names is None:
                raise self.error(step.line, f"{where} is a {step.kind} step: it needs an index (serve with "
                                            "--index NAME=PATH, or give the pipeline runner a retrieval service)")
            if step.index not in index_names:
                raise self.error(step.line_of("index"), f"{where}: no index named {step.index!r}; served: "
                                                        f"{', '.join(sorted(index_names)) or 'none'}")

    def error(self, line: int, message: str) -> PipelineFileError:
        return PipelineFileError(f"{self.source}:{line}: {message}")


def parse_pipelines(gates: Gates) -> Pipelines:
    """The pipelines of `gates`' file (none when it has no `pipelines:` section)."""
    section = gates.pipelines
    if section is None:
        return Pipelines({})
    source, node = section.source, section.node
    if not isinstance(section.data, dict):
        raise PipelineFileError(f"{source}:{node.start_mark.line + 1}: 'pipelines' must map pipeline names to "
                                "{steps: [...]}")
    if len(node.value) != len(section.data):
        keys = [k.value for k, _ in node.value]
        twice = next(k for k in keys if keys.count(k) > 1)
        line = [k.start_mark.line + 1 for k, _ in node.value if k.value == twice][-1]
        raise PipelineFileError(f"{source}:{line}: pipeline {twice!r} is defined twice")
    specs: dict[str, PipelineSpec] = {}
    for (key, value), (name, raw) in zip(node.value, section.data.items(), strict=True):
        specs[name] = _pipeline(str(name), raw, value, key.start_mark.line + 1, gates, source)
    pipelines = Pipelines(specs, source)
    for pipeline in specs.values():
        _check_routes(pipeline, pipelines)
    _check_cycles(pipelines)
    return pipelines


def _pipeline(name: str, raw: Any, node: Any, line: int, gates: Gates, source: str) -> PipelineSpec:
    def fail(at: int, message: str) -> PipelineFileError:
        return PipelineFileError(f"{source}:{at}: pipeline {name!r}: {message}")

    if not name.replace("_", "").replace("-", "").isalnum():
        raise PipelineFileError(f"{source}:{line}: pipeline name must be letters, digits, '-' or '_', got {name!r}")
    short = isinstance(raw, list)  # the short form: just the steps
    if short:
        raw = {"steps": raw}
    if not isinstance(raw, dict):
        raise fail(line, "must be a mapping {steps: [...], deadline_ms, on_timeout} or a list of steps")
    lines = {} if short else _lines(node)
    unknown = sorted(set(raw) - set(PIPELINE_FIELDS))
    if unknown:
        raise fail(lines.get(unknown[0], line), f"unknown field {unknown[0]!r}; known: {', '.join(PIPELINE_FIELDS)}")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise fail(lines.get("steps", line), "'steps' must be a non-empty list of steps")
    step_nodes = (node if short else _child(node, "steps")).value
    steps: list[StepSpec] = []
    for i, (step_raw, step_node) in enumerate(zip(steps_raw, step_nodes, strict=True)):
        at = step_node.start_mark.line + 1
        try:
            step = _step(name, i, step_raw, step_node, at, gates, steps)
        except GateError as exc:  # an inline gate's field
            raise fail(_lines(step_node).get(exc.field or "", at), str(exc)) from None
        except PipelineError as exc:
            message, _, field = str(exc).partition("\x00")
            raise fail(_lines(step_node).get(field, at), message) from None
        if any(s.name == step.name for s in steps):
            raise fail(at, f"two steps are named {step.name!r}: give each a distinct 'name'")
        steps.append(step)
    deadline = _deadline(raw.get("deadline_ms"))
    if deadline is False:
        raise fail(lines.get("deadline_ms", line), f"deadline_ms must be a positive number, got {raw['deadline_ms']!r}")
    on_timeout = raw.get("on_timeout", "fail")
    if on_timeout not in PIPELINE_TIMEOUTS:
        raise fail(lines.get("on_timeout", line), f"on_timeout must be one of {', '.join(PIPELINE_TIMEOUTS)}, "
                                                  f"got {on_timeout!r}")
    return PipelineSpec(name, tuple(steps), deadline or None, on_timeout, str(raw.get("description", "")), line)


def _bad(message: str, field: str) -> PipelineError:
    return PipelineError(f"{message}\x00{field}")  # the field names the line (split off in _pipeline)


def _step(pipeline: str, i: int, raw: Any, node: Any, line: int, gates: Gates, before: list[StepSpec]) -> StepSpec:
    if not isinstance(raw, dict):
        raise _bad(f"step {i + 1} must be a mapping with a 'kind', got {raw!r}", "")
    kind = raw.get("kind")
    if kind not in STEP_KINDS:
        raise _bad(f"step {i + 1}: kind must be one of {', '.join(STEP_KINDS)}, got {kind!r}", "kind")
    name = raw.get("name", kind)
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise _bad(f"step {i + 1}: name must be letters, digits, '-' or '_', got {name!r}", "name")
    where = f"step {name!r}"
    allowed = (*COMMON_FIELDS, *KIND_FIELDS[kind])
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise _bad(f"{where}: unknown field {unknown[0]!r} for a {kind} step; known: {', '.join(allowed)}", unknown[0])
    deadline = _deadline(raw.get("deadline_ms"))
    if deadline is False:
        raise _bad(f"{where}: deadline_ms must be a positive number, got {raw['deadline_ms']!r}", "deadline_ms")
    on_timeout = raw.get("on_timeout", "fail")
    if on_timeout not in STEP_TIMEOUTS:
        raise _bad(f"{where}: on_timeout must be one of {', '.join(STEP_TIMEOUTS)}, got {on_timeout!r}", "on_timeout")
    if on_timeout == "allow" and kind != "moderate":
        raise _bad(f"{where}: on_timeout: allow only applies to moderate steps (use skip)", "on_timeout")
    values: dict[str, Any] = {"name": name, "kind": kind, "line": line, "deadline_ms": deadline or None,
                              "on_timeout": on_timeout, "lines": _lines(node)}
    if kind in GATE_STEPS:
        values["gate"] = _gate(pipeline, name, kind, raw, gates)
    elif kind == "format":
        values["gate"] = _format_gate(pipeline, name, raw)
    else:
        values.update(_retrieval(where, kind, raw, before))
    step = StepSpec(**values)
    labels = step.labels()
    stop_if = raw.get("stop_if", [])
    stop_if = [stop_if] if isinstance(stop_if, str) else stop_if
    if not isinstance(stop_if, list) or not all(isinstance(x, str) for x in stop_if):
        raise _bad(f"{where}: stop_if must be a label or a list of labels, got {raw['stop_if']!r}", "stop_if")
    routes = raw.get("route_on", {})
    if not isinstance(routes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in routes.items()):
        raise _bad(f"{where}: route_on must map labels to a step or pipeline name, got {routes!r}", "route_on")
    for label, field in [*((x, "stop_if") for x in stop_if), *((x, "route_on") for x in routes)]:
        if label not in labels:
            raise _bad(f"{where}: {field} names {label!r}, which a {kind} step never ends with; its labels: "
                       f"{', '.join(labels)}", field)
    return replace(step, stop_if=tuple(stop_if), route_on=dict(routes))


def _gate(pipeline: str, step: str, kind: str, raw: dict[str, Any], gates: Gates) -> GateSpec:
    """The step's gate: `gate: NAME` (same kind), or inline fields over the built-in gate of the kind (if any)."""
    inline = {k: v for k, v in raw.items() if k in INLINE_GATE_FIELDS}
    name = raw.get("gate")
    if name is not None:
        if inline:
            raise _bad(f"step {step!r}: give either 'gate' or inline gate fields ({', '.join(sorted(inline))}), "
                       "not both", "gate")
        spec = gates.get(name) if isinstance(name, str) else None
        if spec is None:
            raise _bad(f"step {step!r}: no gate named {name!r}; defined: {', '.join(sorted(gates))}", "gate")
        if spec.kind != kind:
            raise _bad(f"step {step!r}: gate {name!r} is a {spec.kind} gate; a {kind} step needs a {kind} gate", "gate")
        return spec
    if "labels" in inline and isinstance(inline["labels"], list):
        inline["labels"] = tuple(inline["labels"])
    base = gates.get(kind)
    gate_name = f"{pipeline}-{step}"
    if not inline:
        if base is None:
            raise _bad(f"step {step!r}: there is no built-in {kind} gate: name one with 'gate' or give the gate "
                       "inline (instruction, schema, ...)", "kind")
        return base
    if base is not None and base.kind == kind:
        spec = replace(base, name=gate_name, description="", **inline)
    else:
        spec = GateSpec.from_dict({"name": gate_name, "kind": kind, **inline})
    check_schema(spec)
    return spec


def _format_gate(pipeline: str, step: str, raw: dict[str, Any]) -> GateSpec:
    """A format step is an extract gate: its schema, an instruction that shows the schema."""
    schema = raw.get("schema")
    if not isinstance(schema, dict):
        raise _bad(f"step {step!r}: a format step needs a JSON schema object in 'schema'", "schema")
    instruction = raw.get("instruction") or FORMAT_INSTRUCTION.replace("{schema}", json.dumps(schema))
    fields_: dict[str, Any] = {"name": f"{pipeline}-{step}", "kind": "extract", "instruction": instruction,
                               "schema": schema}
    if "max_tokens" in raw:
        fields_["max_tokens"] = raw["max_tokens"]
    spec = GateSpec.from_dict(fields_)
    check_schema(spec)
    return spec


def _retrieval(where: str, kind: str, raw: dict[str, Any], before: list[StepSpec]) -> dict[str, Any]:
    index = raw.get("index")
    if index is None and kind == "answer":  # the index of the retrieve step before it
        index = next((s.index for s in reversed(before) if s.kind == "retrieve"), None)
    if not isinstance(index, str) or not index:
        raise _bad(f"{where}: a {kind} step needs 'index' (the name of a served index)", "index")
    top_k = raw.get("top_k", 10 if kind == "retrieve" else 5)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise _bad(f"{where}: top_k must be a positive integer, got {top_k!r}", "top_k")
    values: dict[str, Any] = {"index": index, "top_k": top_k}
    if kind == "retrieve":
        mode, rerank = raw.get("mode", "hybrid"), raw.get("rerank", False)
        if mode not in RETRIEVE_MODES:
            raise _bad(f"{where}: mode must be one of {', '.join(RETRIEVE_MODES)}, got {mode!r}", "mode")
        if not isinstance(rerank, bool):
            raise _bad(f"{where}: rerank must be true or false, got {rerank!r}", "rerank")
        values.update(mode=mode, rerank=rerank)
    else:
        params = raw.get("params")
        if params is not None and not isinstance(params, dict):
            raise _bad(f"{where}: params must be a mapping, got {params!r}", "params")
        values["params"] = params
    return values


def _check_routes(pipeline: PipelineSpec, pipelines: Pipelines) -> None:
    """A route names a later step of the same pipeline (a step wins over a pipeline of the same name) or a
    pipeline; a route back to an earlier step (or the step itself) would loop."""
    for i, step in enumerate(pipeline.steps):
        for label, target in step.route_on.items():
            j = pipeline.index_of(target)
            where = f"pipeline {pipeline.name!r} step {step.name!r}: route_on {label!r} -> {target!r}"
            if j is not None and j <= i:
                raise pipelines.error(step.line_of("route_on"), f"{where} goes back to an earlier step: a cycle "
                                                                "(routes must go forward)")
            if j is None and target not in pipelines:
                raise pipelines.error(step.line_of("route_on"), f"{where}: no step or pipeline named {target!r}; "
                                      f"steps: {', '.join(s.name for s in pipeline.steps)}; pipelines: "
                                      f"{', '.join(sorted(pipelines))}")


def _check_cycles(pipelines: Pipelines) -> None:
    """Routes between pipelines must not loop (a -> b -> a)."""
    def calls(p: PipelineSpec) -> Iterator[tuple[str, StepSpec]]:
        for step in p.steps:
            for target in step.route_on.values():
                if p.index_of(target) is None:
                    yield target, step

    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for target, step in calls(pipelines[name]):
            if target in path:
                loop = " -> ".join([*path[path.index(target):], target])
                raise pipelines.error(step.line_of("route_on"), f"pipeline {name!r} step {step.name!r} routes to "
                                                                f"pipeline {target!r}: a cycle ({loop})")
            if target not in done:
                visit(target, [*path, target])
        done.add(name)

    for name in pipelines:
        visit(name, [name])


def _deadline(value: Any) -> float | bool | None:
    """None when absent, False when invalid."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value == float("inf"):
        return False
    return float(value)


def _lines(node: Any) -> dict[str, int]:
    if node is None or not isinstance(node.value, list) or not all(isinstance(x, tuple) for x in node.value):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}


def _child(node: Any, key: str) -> Any:
    return next(v for k, v in node.value if getattr(k, "value", None) == key)
