"""`qwick batch ... --ray`: the batch job as a Ray Data pipeline — the rows still to do are staged as Parquet
files, read with `read_parquet`, run by `map_batches(QwickPredictor, concurrency=N)` (one engine per actor)
and streamed back to this process, which writes them exactly as `qwick batch` does (same output file, resume,
errors file, progress), so both runs give the same lines."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from qwick.batch.job import BatchJob, Summary, write_results
from qwick.batch.plan import PlannedRow, RowResult
from qwick.engine.args import EngineArgs
from qwick.ray.cluster import connect
from qwick.ray.predictor import QwickPredictor

STAGE_ROWS = 256  # rows per staged file: one Ray Data block each, so the actors share the work


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None
    replicas: int = 1  # actors, each with its own engine
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    batch_size: int | None = None  # rows per actor call (default: 2 x max_num_seqs)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"--replicas must be >= 1, got {self.replicas}")
        if self.cpus_per_replica <= 0 or self.gpus_per_replica < 0:
            raise ValueError("--cpus-per-replica must be > 0 and --gpus-per-replica >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")


def run_ray_job(job: BatchJob, engine_args: EngineArgs, ray_options: RayOptions,
                stream: TextIO | None = None) -> Summary:
    """Run `job` on the Ray cluster of `ray_options.address` (or a local one)."""
    job.check()
    ray = connect(ray_options.address)
    if engine_args.threads is None:  # an actor's engine uses the CPUs it reserved, not every core of the node
        engine_args = replace(engine_args, threads=max(1, int(ray_options.cpus_per_replica)))
    with tempfile.TemporaryDirectory(prefix="qwick-batch-") as stage:
        def run(planned: Iterable[PlannedRow | RowResult]) -> Iterator[RowResult]:
            staged = yield from _stage(planned, Path(stage))
            if staged:
                yield from _pipeline(ray, Path(stage), job, engine_args, ray_options)

        return write_results(job, run, stream)


def _stage(planned: Iterable[PlannedRow | RowResult], folder: Path) -> Iterator[RowResult]:
    """Write the rows to run as Parquet files of (line, row JSON); errors pass through. Returns the rows staged."""
    import pyarrow
    import pyarrow.parquet

    chunk: list[PlannedRow] = []
    staged = files = 0

    def flush() -> None:
        nonlocal files
        table = pyarrow.table({"line": [r.line for r in chunk],
                               "row": [json.dumps(r.data, ensure_ascii=False) for r in chunk]})
        pyarrow.parquet.write_table(table, str(folder / f"rows-{files:08d}.parquet"))
        files += 1
        chunk.clear()

    for item in planned:
        if isinstance(item, RowResult):
            yield item
            continue
        chunk.append(item)
        staged += 1
        if len(chunk) == STAGE_ROWS:
            flush()
    if chunk:
        flush()
    return staged


def _pipeline(ray: Any, folder: Path, job: BatchJob, engine_args: EngineArgs,
              options: RayOptions) -> Iterator[RowResult]:
    batch_size = options.batch_size or 2 * engine_args.max_num_seqs
    ds = ray.data.read_parquet(str(folder))
    ds = ds.map_batches(
        QwickPredictor, batch_size=batch_size, concurrency=options.replicas, num_cpus=options.cpus_per_replica,
        num_gpus=options.gpus_per_replica or None, batch_format="pyarrow",
        fn_constructor_kwargs={"model": engine_args, "task": job.task, "options": job.options,
                               "gates": str(job.gates_file) if job.gates_file else None, "json_column": "row"})
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for line, text in zip(batch.column("line").to_pylist(), batch.column("output").to_pylist(), strict=True):
            result = json.loads(text)
            if "output" in result:
                yield RowResult(line, result["output"]["id"], output=result["output"])
            else:
                yield RowResult(line, result["id"], error=result["error"])
