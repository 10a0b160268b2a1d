"""QwickPredictor: a Ray Data callable class (`ds.map_batches(QwickPredictor, concurrency=N, ...)`) — one
engine per actor, built once in `__init__`; `__call__` runs a batch of rows through the same task code and
runner as `qwick batch` (qwick.batch), so both give the same outputs for deterministic tasks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from qwick.batch.context import TaskContext
from qwick.batch.plan import PlanCounts, RowResult, plan_rows
from qwick.batch.rows import InputRow
from qwick.batch.runner import ROWS_PER_SEQ, BatchRunner
from qwick.batch.tasks import TASKS, TaskOptions
from qwick.engine.args import EngineArgs
from qwick.llm import LLM


class QwickPredictor:
    """`model`: a model folder / id or an EngineArgs (`engine_kwargs` are EngineArgs fields); `task`: one of
    qwick.batch.TASKS with its `options`; `gates`: a gates file.

    A batch is a dict of columns (Ray Data's "numpy" or "pandas"-like batches, or a pyarrow Table); rows without
    an `id` column are keyed by their 1-based position in the batch. The output batch holds one row per input row,
    in order: `id`, the task's fields, and `error` (None, or why the row has no output).
    `json_column`: rows arrive as JSON text in this column, with their line in `line`, and leave as JSON text in
    `output` (how `qwick batch --ray` ships rows of any shape through Arrow)."""

    def __init__(self, model: str | Path | EngineArgs, task: str, options: TaskOptions | None = None,
                 gates: str | Path | None = None, json_column: str | None = None, window: int | None = None,
                 **engine_kwargs: Any) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        args = replace(model, **engine_kwargs) if isinstance(model, EngineArgs) else EngineArgs(model=model, **engine_kwargs)
        self.llm = LLM.from_engine_args(args)
        self.task, self.options, self.json_column = TASKS[task], options or TaskOptions(), json_column
        ctx = TaskContext.of(self.llm, self.options, gates)
        self.runner = BatchRunner(ctx, self.task, window or ROWS_PER_SEQ * self.llm.engine_config.max_num_seqs)

    def __call__(self, batch: Any) -> Any:
        rows = self._rows(batch)
        planned = plan_rows(rows, self.task, self.options, set(), PlanCounts())
        results = sorted(self.runner.run(planned), key=lambda r: r.line)
        if self.json_column is not None:
            return {"line": [r.line for r in results], "output": [_json_output(r) for r in results]}
        return _columns([{**(r.output or {"id": r.key if r.key is not None else r.line}), "error": r.error}
                         for r in results])

    def _rows(self, batch: Any) -> list[InputRow]:
        columns = _as_columns(batch)
        if self.json_column is not None:
            lines, texts = columns["line"], columns[self.json_column]
            return [InputRow(int(line), json.loads(text)) for line, text in zip(lines, texts, strict=True)]
        count = len(next(iter(columns.values()))) if columns else 0
        return [InputRow(i + 1, {name: _plain(values[i]) for name, values in columns.items()}) for i in range(count)]


def _json_output(result: RowResult) -> str:
    if result.output is not None:
        return json.dumps({"output": result.output}, ensure_ascii=False)
    return json.dumps({"error": result.error, "id": result.key}, ensure_ascii=False)


def _as_columns(batch: Any) -> Mapping[str, Any]:
    if hasattr(batch, "to_pydict"):  # a pyarrow Table
        return batch.to_pydict()
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # a pandas DataFrame
        return {name: list(batch[name]) for name in batch.columns}
    return batch


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (how Ray Data hands columns over) as plain Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _columns(rows: list[dict[str, Any]]) -> Any:
    """Rows as an Arrow table with every row's fields (a failed row's task fields are null)."""
    import pyarrow

    names = list(dict.fromkeys(name for row in rows for name in row))
    return pyarrow.Table.from_pylist([{name: row.get(name) for name in names} for row in rows])
