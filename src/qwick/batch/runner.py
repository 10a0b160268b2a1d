"""BatchRunner: many rows in flight at once through one engine client, so the continuous-batching engine stays
full; rows come back as they finish.

The offline client (`InlineEngineClient`) is stepped by the coroutines that await it, so the runner keeps a
window of row coroutines on one event loop: every step advances all of them, and a finished row's place is
taken by the next input row at once. `run` is a plain iterator, so a caller (the CLI's writer, `llm.batch`)
writes each row as soon as it is done."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable, Iterator
from typing import Any

from qwick.batch.context import TaskContext
from qwick.batch.plan import PlannedRow, RowResult
from qwick.batch.tasks import BatchTask

ROWS_PER_SEQ = 2  # rows in flight per engine sequence slot: a queue ready to fill a slot the step it frees


class BatchRunner:
    def __init__(self, ctx: TaskContext, task: BatchTask, window: int, prefix: str = "batch") -> None:
        if window < 1:
            raise ValueError(f"the window of rows in flight must be >= 1, got {window}")
        self.ctx, self.task, self.window, self.prefix = ctx, task, window, prefix

    def run(self, planned: Iterable[PlannedRow | RowResult]) -> Iterator[RowResult]:
        """Results as rows finish (errors of unrunnable rows pass straight through). Closing the iterator early
        aborts the rows in flight."""
        loop = asyncio.new_event_loop()
        driver = _Driver(loop)
        pending: set[asyncio.Task[RowResult]] = set()
        source = iter(planned)
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < self.window:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                    elif isinstance(item, RowResult):
                        yield item
                    else:
                        pending.add(loop.create_task(self._one(item)))
                if not pending:
                    return
                done, pending = driver.run(asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED))
                yield from sorted((t.result() for t in done), key=lambda r: r.line)
        finally:
            for task in pending:
                task.cancel()  # a cancelled row aborts its engine requests (InlineEngineClient._wait)
            if pending:
                driver.run(asyncio.gather(*pending, return_exceptions=True))
            driver.close()

    async def _one(self, row: PlannedRow) -> RowResult:
        try:
            fields = await self.task.run(self.ctx, row.inputs, f"{self.prefix}-{row.line}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one row's failure (too long for the context, a bad template) is its error
            return RowResult(row.line, row.key, error=f"line {row.line}: {type(exc).__name__}: {exc}")
        return RowResult(row.line, row.key, output={"id": row.key, **fields})


class _Driver:
    """Runs the loop until an awaitable is done, in this thread, or in a helper thread when this thread already
    runs an event loop (a notebook; `run_until_complete` refuses to nest)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        try:
            asyncio.get_running_loop()
            self.pool: concurrent.futures.ThreadPoolExecutor | None = concurrent.futures.ThreadPoolExecutor(1)
        except RuntimeError:
            self.pool = None

    def run(self, awaitable: Any) -> Any:
        if self.pool is None:
            return self.loop.run_until_complete(awaitable)
        return self.pool.submit(self.loop.run_until_complete, awaitable).result()

    def close(self) -> None:
        self.loop.close()
        if self.pool is not None:
            self.pool.shutdown()
