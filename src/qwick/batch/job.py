"""One `qwick batch` run on this machine: check the paths, skip rows already in the output, run the rest through
the BatchRunner, write each finished row (or its error), report progress and a summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from qwick.batch.context import TaskContext
from qwick.batch.output import ErrorsFile, OutputFile, check_output, default_errors_path
from qwick.batch.plan import PlanCounts, PlannedRow, RowResult, plan_rows
from qwick.batch.progress import Progress
from qwick.batch.rows import check_input, count_rows, read_rows
from qwick.batch.runner import ROWS_PER_SEQ, BatchRunner
from qwick.batch.tasks import TASKS, TaskOptions


class TooManyErrorsError(ValueError):
    """More rows failed than --max-errors allows; the rows done so far are in the output (resume later)."""


@dataclass
class BatchJob:
    """A batch run's files and task (what the CLI's flags say)."""

    input: Path
    output: Path
    task: str
    options: TaskOptions = field(default_factory=TaskOptions)
    gates_file: Path | None = None
    errors: Path | None = None  # default: OUT's name with .errors.jsonl
    max_errors: int | None = 100  # None: no limit
    window: int | None = None  # rows in flight (default: ROWS_PER_SEQ x the engine's max_num_seqs)
    progress: bool = True

    def __post_init__(self) -> None:
        self.input, self.output = Path(self.input), Path(self.output)
        self.errors = Path(self.errors) if self.errors is not None else default_errors_path(self.output)
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.max_errors is not None and self.max_errors < 0:
            raise ValueError(f"--max-errors must be >= 0, got {self.max_errors}")

    def check(self) -> None:
        """The checks that need no model (run before it loads)."""
        check_input(self.input)
        assert self.errors is not None
        check_output(self.output, self.input, self.errors)
        if self.gates_file is not None and not Path(self.gates_file).is_file():
            raise ValueError(f"--gates {self.gates_file}: no such file")


@dataclass
class Summary:
    rows: int = 0  # in the input
    written: int = 0
    skipped: int = 0  # already in the output
    errors: int = 0
    seconds: float = 0.0

    def line(self, job: BatchJob) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        text = (f"qwick batch: {self.written} rows written to {job.output} in {self.seconds:.1f} s "
                f"({rate:.1f} rows/s); {self.skipped} already done")
        return text + (f"; {self.errors} errors in {job.errors}" if self.errors else "; no errors")


def run_job(job: BatchJob, llm: Any, stream: TextIO | None = None) -> Summary:
    """Run `job` on `llm` (an LLM: its engine client, stepped in this thread)."""
    task = TASKS[job.task]
    ctx = TaskContext.of(llm, job.options, job.gates_file)
    window = job.window or ROWS_PER_SEQ * llm.engine_config.max_num_seqs
    runner = BatchRunner(ctx, task, window)
    return write_results(job, lambda planned: runner.run(planned), stream)


def write_results(job: BatchJob, run: Any, stream: TextIO | None = None) -> Summary:
    """Plan the job's rows, `run(planned) -> RowResults` (this machine's runner, or Ray), write what comes back."""
    job.check()
    assert job.errors is not None
    stream = stream or sys.stderr
    out, errors = OutputFile(job.output), ErrorsFile(job.errors)
    summary, counts = Summary(rows=count_rows(job.input)), PlanCounts()
    progress = Progress(summary.rows, stream, job.progress)
    start, complete = time.perf_counter(), False
    planned = plan_rows(read_rows(job.input), TASKS[job.task], job.options, set(out.done), counts)
    results = run(_counting(planned, counts, progress))
    try:
        for result in results:
            if result.output is not None:
                out.write(result.output)
                summary.written += 1
            else:
                errors.write(result.error_record())
                if job.max_errors is not None and errors.count > job.max_errors:
                    raise TooManyErrorsError(f"more than --max-errors {job.max_errors} rows failed (see "
                                             f"{job.errors}); the {summary.written} rows done are in {job.output}")
            progress.update()
        complete = True
    finally:
        results.close()  # stopped early (too many errors, Ctrl-C): the rows in flight are aborted
        out.close(complete)
        errors.close()
        summary.skipped, summary.errors = counts.skipped, errors.count
        summary.seconds = time.perf_counter() - start
        progress.finish()
    if job.progress:
        print(summary.line(job), file=stream)
    return summary


def _counting(planned: Iterable[PlannedRow | RowResult], counts: PlanCounts,
              progress: Progress) -> Iterator[PlannedRow | RowResult]:
    """The planned rows; rows skipped as done move the progress bar too."""
    skipped = 0
    for item in planned:
        if counts.skipped > skipped:
            progress.update(counts.skipped - skipped)
            skipped = counts.skipped
        yield item
    progress.update(counts.skipped - skipped)
