"""End-to-end pipelines on the Qwen3-0.6B shape (dummy weights): moderate -> rewrite -> format through the
PipelineRunner vs the same gates chained by hand, same run.

Workload: 32-token texts through the pipeline `moderate -> rewrite -> format` (threshold 0, so every step
runs; rewrite and format capped at --max-tokens new tokens), p50/p95 latency and QPS at concurrency 1 and 16,
through GateService over AsyncLLMEngine (the server's path, no HTTP). The peer is the glue a user writes today:
the same three gates awaited one after another on the same GateService. The ratio (pipeline p50 / glue p50)
is the cost of the pipeline machinery (conditions, deadlines, the ledger-ready step records); it should be
~1.0. Dummy weights generate arbitrary tokens, so rewrite/format outputs may be cut at --max-tokens (counted
as `invalid`); both paths do the same work.

A retrieve step (moderate -> rewrite -> retrieve -> format) needs an index service (qwick.rag); `--index` is
refused until one is available in this checkout.

Run: python benchmarks/pipeline.py [--tiny] [--device cpu|cuda] [--requests 32] [--json out.json]
`--tiny` runs on a tiny random config in seconds (a smoke test, numbers meaningless).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gates import builtin_without_deadline, model_folder, summary, texts
from qwick import LLM
from qwick.engine.args import EngineArgs
from qwick.engine.async_engine import AsyncLLMEngine
from qwick.gates.identity import ModelIdentity
from qwick.gates.loader import Gates, parse_gates
from qwick.gates.service import GateService
from qwick.llm import start_async_engine
from qwick.pipelines.loader import parse_pipelines
from qwick.pipelines.runner import PipelineRunner

SCHEMA = ('{type: object, properties: {intent: {enum: [question, purchase, other]}, urgent: {type: boolean}}, '
          'required: [intent, urgent], additionalProperties: false}')


def gates_file(max_tokens: int, retrieve: bool) -> str:
    recall = "    - {name: recall, kind: retrieve, index: bench, top_k: 5, mode: hybrid}\n" if retrieve else ""
    return f"""\
pipelines:
  bench:
    - {{name: guard, kind: moderate, gate: bench_moderate, stop_if: deny}}
    - {{name: query, kind: rewrite, gate: bench_rewrite}}
{recall}    - {{name: reply, kind: format, max_tokens: {max_tokens}, schema: {SCHEMA}}}
"""


async def index_service(llm: LLM, engine: AsyncLLMEngine, count: int, folder: Path, rng: random.Random) -> Any:
    """A RagService over an index of `count` synthetic documents, built now with the served model."""
    from qwick.rag import EngineModel, RagService, build_index

    # dummy weights have no files to hash (EngineModel.of would): the index records a stand-in identity
    config = getattr(getattr(llm, "model", None), "config", None)
    model = EngineModel(engine, llm.get_tokenizer(), "bench-dummy", "dummy-weights", llm.max_model_len, "dummy",
                        getattr(config, "hidden_size", None))
    docs = folder / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"id": f"doc{i}", "text": text})
                              for i, text in enumerate(texts(llm, count, 200, rng))))
    start = time.perf_counter()
    report = await build_index(folder / "bench.sqlite", [docs], model)
    print(f"index: {count} documents, {report.chunks} chunks built in {time.perf_counter() - start:.1f} s")
    return RagService({"bench": folder / "bench.sqlite"}, model)


async def load(call: Callable[[str], Awaitable[bool]], inputs: list[str], concurrency: int) -> dict[str, Any]:
    """`concurrency` clients, each sending its next request when the previous one is answered; `call` returns
    whether the run ended with valid output."""
    pending = list(inputs)
    latencies: list[float] = []
    invalid = 0

    async def client() -> None:
        nonlocal invalid
        while pending:
            text = pending.pop()
            start = time.perf_counter()
            invalid += not await call(text)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return summary(latencies, time.perf_counter() - start) | {"invalid": invalid}


async def runs(llm: LLM, engine: AsyncLLMEngine, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    moderate = replace(builtin_without_deadline("moderate"), threshold=0.0)  # every step runs
    rewrite = replace(builtin_without_deadline("rewrite"), max_tokens=args.max_tokens)
    retrieve = args.retrieve_docs > 0
    section = parse_gates(gates_file(args.max_tokens, retrieve), "bench.yaml").pipelines
    gates = Gates([moderate, rewrite], "bench.yaml", pipelines=section)  # the gates without their deadlines
    pipelines = parse_pipelines(gates)
    service = GateService(engine, llm.get_tokenizer(), gates, ModelIdentity("bench", None, ""))
    rag = await index_service(llm, engine, args.retrieve_docs, args.workdir, rng) if retrieve else None
    runner = PipelineRunner(service, pipelines, rag)
    fmt = pipelines["bench"].steps[-1].gate
    assert fmt is not None

    async def pipeline(text: str) -> bool:
        result = await runner.run("bench", text)
        return result.error is None and not result.blocked

    async def glue(text: str) -> bool:  # what users hand-write today: one gate after another
        guard = await service.moderate(text, moderate.name)
        if not guard.allow:
            return False
        query = await service.rewrite(text, rewrite.name)
        rewritten = query.output.get("rewrite", text) if query.schema_valid and query.output else text
        if rag is not None:
            await rag.retrieve("bench", rewritten, top_k=5, mode="hybrid")
        reply = await service.run(fmt, {"text": rewritten})
        return bool(reply.schema_valid)

    for warm in texts(llm, 2, 32, rng):  # kernels, grammars, the instruction prefixes into the cache
        await pipeline(warm)
        await glue(warm)
    out: dict[str, Any] = {}
    for concurrency in (1, 16):  # fresh texts for every run: a text seen before would be a prefix-cache hit
        out[f"pipeline_c{concurrency}"] = await load(pipeline, texts(llm, args.requests, 32, rng), concurrency)
        out[f"glue_c{concurrency}"] = await load(glue, texts(llm, args.requests, 32, rng), concurrency)
    await engine.shutdown()
    return out


def report(results: dict[str, Any]) -> None:
    s = results["settings"]
    steps = "moderate -> rewrite -> retrieve -> format" if s["retrieve_docs"] else "moderate -> rewrite -> format"
    print(f"pipeline {steps}, {s['shape']} ({s['dtype']}, {s['device']}), "
          f"{s['requests']} requests per run, max_tokens {s['max_tokens']}")
    for c in (1, 16):
        p, g = results[f"pipeline_c{c}"], results[f"glue_c{c}"]
        print(f"  concurrency {c:>2}: pipeline p50 {p['p50_ms']:8.1f} ms p95 {p['p95_ms']:8.1f} ms {p['qps']:6.2f}/s "
              f"(invalid {p['invalid']}) | glue p50 {g['p50_ms']:8.1f} ms p95 {g['p95_ms']:8.1f} ms {g['qps']:6.2f}/s "
              f"(invalid {g['invalid']}) | p50 ratio {p['p50_ms'] / g['p50_ms']:.2f}x")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random config: a smoke test in seconds")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16"))
    p.add_argument("--requests", type=int, default=32, help="requests per run")
    p.add_argument("--max-tokens", type=int, default=32, help="new tokens at most for rewrite and format")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--kv-cache-gib", type=float, default=2.0)
    p.add_argument("--retrieve-docs", type=int, default=0,
                   help="add a retrieve step over an index of this many synthetic documents (built first)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the measurements to this file")
    args = p.parse_args(argv)
    if args.tiny:
        args.requests, args.max_tokens = min(args.requests, 8), min(args.max_tokens, 16)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model").mkdir()
        folder = model_folder(args, Path(tmp) / "model")
        args.workdir = Path(tmp)
        llm, engine = start_async_engine(lambda: LLM.from_engine_args(EngineArgs(
            folder, dtype=args.dtype, device=args.device, load_format="dummy", seed=0, max_model_len=2048,
            max_num_seqs=args.max_num_seqs, kv_cache_memory_bytes=int(args.kv_cache_gib * 1024**3))))
        results: dict[str, Any] = {"settings": {"shape": "tiny" if args.tiny else "Qwen3-0.6B", "dtype": args.dtype,
                                                "device": args.device, "requests": args.requests,
                                                "max_tokens": args.max_tokens,
                                                "retrieve_docs": args.retrieve_docs}}
        results |= asyncio.run(runs(llm, engine, args, rng))
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
