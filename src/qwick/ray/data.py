"""`qwick batch ... --ray`: the batch job as a Ray Data pipeline — the rows still to do are put in Ray's object
store as Arrow blocks of (line, row JSON) (`from_arrow`; the store spills to disk past its memory), run by
`map_batches(QwickPredictor, concurrency=N)` (one engine per actor) and streamed back to this process, which
writes them exactly as `qwick batch` does (same output file, resume, errors file, progress), so both runs give
the same lines.

Why not `read_parquet` of staged files: read tasks need a CPU each, and with every CPU held by the actors (2
actors on a 2-CPU cluster) the pipeline starved waiting for them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TextIO

from qwick.batch.job import BatchJob, Summary, write_results
from qwick.batch.plan import PlannedRow, RowResult
from qwick.engine.args import EngineArgs
from qwick.ray.cluster import connect
from qwick.ray.predictor import QwickPredictor


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

    def run(planned: Iterable[PlannedRow | RowResult]) -> Iterator[RowResult]:
        blocks: list[Any] = []  # one per actor call's batch, so the actors share the work
        yield from _stage(planned, blocks, ray_options.batch_size or 2 * engine_args.max_num_seqs)
        if blocks:
            yield from _pipeline(ray.data.from_arrow(blocks), job, engine_args, ray_options)

    return write_results(job, run, stream)


def _stage(planned: Iterable[PlannedRow | RowResult], blocks: list[Any], rows: int) -> Iterator[RowResult]:
    """The rows to run as Arrow tables of `rows` (line, row JSON) into `blocks`; errors pass through."""
    import pyarrow

    chunk: list[PlannedRow] = []

    def flush() -> None:
        blocks.append(pyarrow.table({"line": [r.line for r in chunk],
                                     "row": [json.dumps(r.data, ensure_ascii=False) for r in chunk]}))
        chunk.clear()

    for item in planned:
        if isinstance(item, RowResult):
            yield item
            continue
        chunk.append(item)
        if len(chunk) == rows:
            flush()
    if chunk:
        flush()


def _pipeline(ds: Any, job: BatchJob, engine_args: EngineArgs, options: RayOptions) -> Iterator[RowResult]:
    batch_size = options.batch_size or 2 * engine_args.max_num_seqs
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
