"""`llm.batch(rows, task=...)`: the batch runner as an iterator of output rows, for Python callers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from qwick.batch.context import TaskContext
from qwick.batch.plan import PlanCounts, plan_rows
from qwick.batch.rows import InputRow
from qwick.batch.runner import ROWS_PER_SEQ, BatchRunner
from qwick.batch.tasks import TASKS, TaskOptions


def batch_rows(llm: Any, rows: Iterable[dict[str, Any]], task: str, *, gates: str | Path | None = None,
               window: int | None = None, **options: Any) -> Iterator[dict[str, Any]]:
    """Each row's output ({"id": its id or 1-based position, **fields}) as it finishes; a row that cannot run
    gives {"id", "error"}. `options`: TaskOptions' fields (gate, labels, instruction, dimensions, sampling,
    chat_template_kwargs)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if isinstance(rows, dict | str):
        raise TypeError("rows must be an iterable of dicts (one per row), not a single "
                        f"{type(rows).__name__}")
    if options.get("labels") is not None:
        options["labels"] = tuple(options["labels"])
    task_options = TaskOptions(**options)
    ctx = TaskContext.of(llm, task_options, gates)
    runner = BatchRunner(ctx, TASKS[task], window or ROWS_PER_SEQ * llm.engine_config.max_num_seqs)
    planned = plan_rows(_input_rows(rows), TASKS[task], task_options, set(), PlanCounts())
    for result in runner.run(planned):
        if result.output is not None:
            yield result.output
        else:
            yield {"id": result.key if result.key is not None else result.line, "error": result.error}


def _input_rows(rows: Iterable[dict[str, Any]]) -> Iterator[InputRow]:
    for number, row in enumerate(rows, 1):
        if isinstance(row, dict):
            yield InputRow(number, row)
        else:
            yield InputRow(number, None, f"row {number} is a {type(row).__name__}, not a dict")
