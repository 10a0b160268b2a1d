"""Batch files on the Qwen3-0.6B shape (dummy weights): rows/s of `qwick batch` against its peers, one run.

Tasks: moderate (the built-in moderation gate) and embed (last-token pooled embeddings), over --rows rows of
~32-token texts. For each task, rows/s of:
  qwick batch     the batch runner (`qwick.batch.job.run_job`, what `qwick batch` runs): many rows in flight
  offline loop    the same rows one offline call each (`llm.gates.moderate(text)`, `llm.embed(text)`)
  transformers    pipelines in batches of --hf-batch: moderation = `text-generation` (greedy, 4 new tokens,
                  left-padded) then a label found in the text; embeddings = `feature-extraction`, last token
  ray 1 / ray 2   `qwick batch --ray` (Ray Data, map_batches over QwickPredictor actors, 32 rows a call) with 1 and 2 actors of
                  1 CPU each on a local cluster; end to end, actor start-up (engine build) included
Ratios are against `qwick batch` in the same run. On a 2-core machine two actors share the cores the single
engine already used, so expect Ray's overhead rather than a speed-up there; the scaling shows on more cores
or machines.

Run: python benchmarks/batch.py [--tiny] [--rows 256] [--tasks moderate,embed] [--no-transformers] [--no-ray]
`--tiny` runs a tiny random config in seconds (a smoke test: numbers meaningless).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from gates import model_folder, texts
from qwick import LLM
from qwick.batch.job import BatchJob, run_job
from qwick.batch.tasks import TaskOptions
from qwick.engine.args import EngineArgs

TASKS = ("moderate", "embed")


def qwick_batch(llm: LLM, task: str, rows: list[dict[str, Any]], folder: Path) -> float:
    src = folder / f"{task}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = folder / f"{task}.out.jsonl"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    summary = run_job(BatchJob(src, out, task, TaskOptions(), progress=False), llm)
    assert summary.written == len(rows), summary
    return len(rows) / (time.perf_counter() - start)


def offline_loop(llm: LLM, task: str, rows: list[dict[str, Any]]) -> float:
    gates = llm.new_gates()
    start = time.perf_counter()
    for row in rows:
        if task == "moderate":
            gates.moderate(row["text"])
        else:
            llm.embed(row["text"])
    return len(rows) / (time.perf_counter() - start)


def transformers_pipeline(llm: LLM, task: str, rows: list[dict[str, Any]], batch: int) -> float:
    import torch
    import transformers

    from batched import HFPeer
    from qwick.gates.prompts import render_gate
    from qwick.passes.cpu_packing import dense_state_dict

    peer = HFPeer(llm.model_path, llm.dtype, dense_state_dict(llm.model))
    tok = transformers.AutoTokenizer.from_pretrained(llm.model_path)
    spec = llm.gates.service.gates["moderate"]
    start = time.perf_counter()
    with torch.inference_mode():
        if task == "moderate":
            tok.padding_side = "left"
            pipe = transformers.pipeline("text-generation", model=peer.model, tokenizer=tok, batch_size=batch)
            prompts = [render_gate(llm.get_tokenizer(), spec, r["text"]).text for r in rows]
            for out in pipe(prompts, max_new_tokens=4, do_sample=False, return_full_text=False):
                answer = out[0]["generated_text"]
                next((label for label in spec.labels if label in answer), "unparsed")
        else:
            tok.padding_side = "right"
            pipe = transformers.pipeline("feature-extraction", model=peer.model.model, tokenizer=tok, batch_size=batch)
            inputs = [r["text"] + "<|endoftext|>" for r in rows]  # Qwen3-Embedding's format: pool the EOS token
            for text, hidden in zip(inputs, pipe(inputs, return_tensors=True), strict=True):
                last = len(tok(text).input_ids) - 1
                torch.nn.functional.normalize(hidden[0, last].float(), dim=0)
    return len(rows) / (time.perf_counter() - start)


def ray_batch(folder: Path, model: Path, task: str, rows: list[dict[str, Any]], actors: int, tiny: bool) -> float:
    from qwick.ray.data import RayOptions, run_ray_job

    src = folder / f"{task}.jsonl"
    out = folder / f"{task}.ray{actors}.jsonl"
    out.unlink(missing_ok=True)
    args = EngineArgs(model, load_format="dummy", seed=0, dtype="float32" if tiny else "auto", threads=1)
    start = time.perf_counter()
    summary = run_ray_job(BatchJob(src, out, task, TaskOptions(), progress=False), args, RayOptions(replicas=actors, batch_size=32))
    assert summary.written == len(rows), summary
    return len(rows) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a tiny random config (smoke test)")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--hf-batch", type=int, default=16, help="transformers pipeline batch size (default 16)")
    p.add_argument("--no-transformers", action="store_true")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    rng = random.Random(0)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = _model(args, folder)
        llm = LLM.from_engine_args(EngineArgs(model, load_format="dummy", seed=0,
                                              dtype="float32" if args.tiny else "auto"))
        if not args.no_ray:
            from qwick.ray.cluster import connect

            connect(None, num_cpus=2)
        for task in args.tasks.split(","):
            rows = [{"id": i, "text": t} for i, t in enumerate(texts(llm, args.rows, 32, rng))]
            qwick_batch(llm, task, rows[:8], folder)  # warm-up
            row: dict[str, float] = {"qwick batch": qwick_batch(llm, task, rows, folder),
                                     "offline loop": offline_loop(llm, task, rows)}
            if not args.no_transformers:
                row["transformers"] = transformers_pipeline(llm, task, rows, args.hf_batch)
            if not args.no_ray:
                row["ray 1 actor"] = ray_batch(folder, model, task, rows, 1, args.tiny)
                row["ray 2 actors"] = ray_batch(folder, model, task, rows, 2, args.tiny)
            results[task] = row
            print(f"\n{task}: {len(rows)} rows")
            for name, rate in row.items():
                print(f"  {name:>14} {rate:9.1f} rows/s  {rate / row['qwick batch']:6.2f}x qwick batch")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _model(args: argparse.Namespace, folder: Path) -> Path:
    dest = folder / "model"
    dest.mkdir()
    return model_folder(args, dest)


if __name__ == "__main__":
    main()
