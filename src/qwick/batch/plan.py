"""Which input rows a run still has to do: each row's key and task inputs checked, rows already in the output
skipped (resume), repeated ids and malformed rows turned into errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from qwick.batch.rows import InputRow, RowError, key_text
from qwick.batch.tasks import BatchTask, TaskOptions


@dataclass
class RowResult:
    """One finished row: `output` is its output line ({"id": key, **fields}), or `error` says why it has none."""

    line: int
    key: Any
    output: dict[str, Any] | None = None
    error: str | None = None
    raw: str | None = None  # a malformed line as read

    def error_record(self) -> dict[str, Any]:
        """The errors file's line for this row."""
        record: dict[str, Any] = {"line": self.line, "error": self.error}
        if self.key is not None:
            record["id"] = self.key
        if self.raw is not None:
            record["input"] = self.raw
        return record


@dataclass
class PlannedRow:
    """A row to run: its inputs as the task parsed them (`data`: the row as read)."""

    line: int
    key: Any
    inputs: dict[str, Any]
    data: dict[str, Any]


@dataclass
class PlanCounts:
    skipped: int = 0  # already in the output (resume)


def plan_rows(rows: Iterable[InputRow], task: BatchTask, options: TaskOptions, done: set[str],
              counts: PlanCounts) -> Iterator[PlannedRow | RowResult]:
    """`rows` less those whose key is in `done`; errors for malformed rows and for an id seen before."""
    seen: set[str] = set()
    for row in rows:
        if row.error is not None:
            yield RowResult(row.line, None, error=row.error, raw=row.raw)
            continue
        assert row.data is not None
        try:
            key = row.key
            text = key_text(key)
            if text in seen:
                raise RowError(f"id {text} appears again: ids must be unique, the output is keyed by them (a row "
                               "without an id is keyed by its line number)")
            seen.add(text)
            if text in done:
                counts.skipped += 1
                continue
            inputs = task.parse(row.data, options)
        except RowError as exc:
            yield RowResult(row.line, row.data.get("id"), error=f"line {row.line}: {exc}")
            continue
        yield PlannedRow(row.line, key, inputs, row.data)
