"""Gates files (YAML): parse, validate, and report problems as `path:line: what is wrong`.

    gates:
      - name: strict_moderation      # a new gate; naming a built-in (moderate, classify, rewrite, score)
        kind: moderate               # replaces it, so its endpoint uses the new definition by default
        instruction: "... answer with one of: {labels}"
        labels: [safe, violence, hate]
        threshold: 0.7
        deadline_ms: 150
        on_timeout: deny
        adapter: guard               # optional: run under this served LoRA adapter (--lora-modules guard=PATH)
    pipelines:                       # optional: chains of steps over the gates (qwick.pipelines parses them)
      support: {steps: [{kind: moderate, stop_if: deny}, {kind: rewrite}]}
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwick.gates.defaults import BUILTIN_GATES
from qwick.gates.spec import GateError, GateSpec
from qwick.tokenizer import Tokenizer


class GateFileError(ValueError):
    """An invalid gates file; the message starts with `path:line:`."""


@dataclass(frozen=True)
class Section:
    """A top-level part of a gates file that another package reads (`pipelines:`): the parsed value, its YAML
    node (for line numbers) and the file's name."""

    data: Any
    node: Any
    source: str


@dataclass
class _Where:
    line: int
    fields: dict[str, int] = field(default_factory=dict)  # key -> line


class Gates(Mapping[str, GateSpec]):
    """Gates by name: the built-ins, overridden or extended by a gates file."""

    def __init__(self, specs: list[GateSpec], source: str = "<built-in>",
                 where: dict[str, _Where] | None = None, pipelines: Section | None = None) -> None:
        self._specs = {s.name: s for s in BUILTIN_GATES}
        self._specs.update({s.name: s for s in specs})
        self.source = source
        self._where = where or {}
        self.pipelines = pipelines  # the file's `pipelines:` section, unparsed (qwick.pipelines reads it)

    def __getitem__(self, name: str) -> GateSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def check_tokens(self, tokenizer: Tokenizer) -> None:
        """Label gates: no label's tokens may be a prefix of another's (its probability would include the
        other's). Schemas must be valid JSON Schema. Raises GateFileError naming the line."""
        for spec in self._specs.values():
            try:
                check_labels(spec, tokenizer)
                check_schema(spec)
            except GateError as exc:
                raise self._error(spec.name, exc) from None

    def check_adapters(self, adapters: Collection[str]) -> None:
        """Every gate's `adapter` must name one of `adapters` (the served LoRA adapters). Raises GateFileError
        naming the line."""
        for spec in self._specs.values():
            if spec.adapter is not None and spec.adapter not in adapters:
                served = ", ".join(sorted(adapters)) or "none (serve them with --lora-modules NAME=PATH)"
                raise self._error(spec.name, GateError(f"gate {spec.name!r}: adapter {spec.adapter!r} is not a served "
                                                       f"LoRA adapter; served: {served}", "adapter"))

    def _error(self, name: str, exc: GateError) -> GateFileError:
        where = self._where.get(name)
        if where is None:
            return GateFileError(f"{self.source}: {exc}")
        line = where.fields.get(exc.field or "", where.line)
        return GateFileError(f"{self.source}:{line}: {exc}")


def check_labels(spec: GateSpec, tokenizer: Tokenizer) -> None:
    encoded = {label: tokenizer.encode(label) for label in spec.labels}
    for a, ids_a in encoded.items():
        for b, ids_b in encoded.items():
            if a != b and ids_b[: len(ids_a)] == ids_a:
                raise GateError(f"gate {spec.name!r}: label {a!r} tokenizes to a prefix of label {b!r}, so its "
                                f"probability would include {b!r}'s: rename one of them", "labels")


def check_schema(spec: GateSpec) -> None:
    if spec.schema is None:
        return
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(spec.schema)
    except jsonschema.SchemaError as exc:
        raise GateError(f"gate {spec.name!r}: schema is not valid JSON Schema: {exc.message}", "schema") from None


def load_gates(path: str | Path | None) -> Gates:
    """The built-in gates, plus (replacing same-named ones) those of the YAML file at `path`."""
    if path is None:
        return Gates([])
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GateFileError(f"{path}: cannot read the gates file: {exc.strerror or exc}") from None
    return parse_gates(text, str(path))


def parse_gates(text: str, source: str = "<gates>") -> Gates:
    import yaml

    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise GateFileError(f"{source}{line}: invalid YAML: {problem}") from None
    has_gates = isinstance(data, dict) and isinstance(data.get("gates"), list)
    if not isinstance(data, dict) or not (has_gates or ("pipelines" in data and data.get("gates") is None)):
        raise GateFileError(f"{source}:1: expected a mapping with a 'gates' list, e.g. 'gates: [{{name: ..., "
                            "kind: moderate, instruction: ...}]' (and/or a 'pipelines' mapping)")
    extra = sorted(set(data) - {"gates", "pipelines"})
    if extra:
        raise GateFileError(f"{source}:{_key_line(root, extra[0])}: unknown top-level key {extra[0]!r} "
                            "(only 'gates' and 'pipelines' are allowed)")
    pipelines = Section(data["pipelines"], _value_node(root, "pipelines"), source) if "pipelines" in data else None
    items = _value_node(root, "gates").value if has_gates else []
    specs: list[GateSpec] = []
    where: dict[str, _Where] = {}
    for raw, node in zip(data.get("gates") or [], items, strict=True):
        line = node.start_mark.line + 1
        if not isinstance(raw, dict):
            raise GateFileError(f"{source}:{line}: each gate must be a mapping of fields, got {raw!r}")
        lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
        try:
            spec = GateSpec.from_dict(raw)
        except GateError as exc:
            raise GateFileError(f"{source}:{lines.get(exc.field or '', line)}: {exc}") from None
        except TypeError as exc:  # a field of the wrong shape reached the constructor
            raise GateFileError(f"{source}:{line}: gate {raw.get('name')!r}: {exc}") from None
        if spec.name in where:
            raise GateFileError(f"{source}:{line}: gate {spec.name!r} is defined twice "
                                f"(first at line {where[spec.name].line})")
        where[spec.name] = _Where(line, lines)
        specs.append(spec)
    return Gates(specs, source, where, pipelines)


def _value_node(mapping: Any, key: str) -> Any:
    return next(v for k, v in mapping.value if getattr(k, "value", None) == key)


def _key_line(mapping: Any, key: str) -> int:
    return next(k.start_mark.line + 1 for k, _ in mapping.value if getattr(k, "value", None) == key)
