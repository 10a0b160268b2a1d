"""Retrieval on the Qwen3-0.6B shape (dummy weights): index build throughput vs sentence-transformers, and
search latency at 10k and 100k chunks.

  build   `qwick index build`'s path (chunking, Qwen3-Embedding document format, batched embedding through the
          engine, SQLite writes) over N chunks of ~256 tokens: chunks/s and embedded tokens/s; beside it, the same
          chunks encoded with the same weights by sentence-transformers (last-token pooling, normalised; batch 32)
          when it is installed (it is not a qwick dependency: the column is skipped, and the script says so),
          and by plain transformers doing what sentence-transformers does underneath (left-padded batches of 32,
          last token, L2 norm). Bar (the issue's): qwick >= 2x sentence-transformers.
  search  p50 of vector (numpy cosine), bm25 (FTS5) and hybrid (RRF) search over indexes of 10k and 100k chunks,
          the query embedding excluded (measured separately). These indexes hold synthetic texts and random unit
          vectors: search cost does not depend on the values, and embedding 100k chunks on a CPU takes hours.

Run: python benchmarks/rag.py [--tiny] [--chunks 256] [--sizes 10000 100000] [--device cpu|cuda]
`--tiny`: a tiny random config and small sizes, a smoke test in seconds (numbers meaningless).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gates import TINY, WORDS, tokenizer_files
from qwick import LLM
from qwick.bench import dummy_model_folder, write_dummy_checkpoint
from qwick.engine.sync_engine import run_sync
from qwick.rag import EngineModel, RagService, build_index
from qwick.rag.documents import Document
from qwick.rag.store import IndexInfo, IndexStore

BATCH = 32


def model_folder(tiny: bool, dest: Path) -> Path:
    """A checkpoint with real weight files (random), so qwick and the peers load the very same weights."""
    dest.mkdir(parents=True, exist_ok=True)
    dummy_model_folder(None, dest)
    if tiny:
        config = json.loads((dest / "config.json").read_text()) | TINY
        (dest / "config.json").write_text(json.dumps(config))
    tokenizer_files(dest)
    write_dummy_checkpoint(dest)
    return dest


def corpus(folder: Path, chunks: int, rng: random.Random) -> Path:
    """`chunks` files of ~200 words in sentences (one ~256-token chunk each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(chunks):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(17)]
        (folder / f"doc{i:06d}.txt").write_text(" ".join(sentences))
    return folder


def bench_build(llm: LLM, docs: Path, dest: Path) -> tuple[dict[str, Any], list[str]]:
    model = EngineModel.of(llm)
    start = time.perf_counter()
    report = run_sync(build_index(dest, [docs], model, 256, 32))
    seconds = time.perf_counter() - start
    store = IndexStore.open(dest)
    texts = [t for (t,) in store.conn.execute("SELECT text FROM chunks ORDER BY rowid")]
    store.close()
    return {"chunks": report.chunks, "tokens": report.tokens, "seconds": seconds,
            "chunks_per_s": report.chunks / seconds, "tokens_per_s": report.tokens / seconds}, texts


def bench_transformers(folder: Path, texts: list[str], dtype: torch.dtype, device: str) -> dict[str, Any]:
    """What sentence-transformers does for Qwen3-Embedding, in plain transformers: left padding, last token."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = transformers.AutoModel.from_pretrained(folder, dtype=dtype).to(device).eval()
    inputs = [t + "<|endoftext|>" for t in texts]
    start, tokens = time.perf_counter(), 0
    with torch.inference_mode():
        for i in range(0, len(inputs), BATCH):
            batch = tokenizer(inputs[i:i + BATCH], padding=True, return_tensors="pt").to(device)
            tokens += int(batch["attention_mask"].sum())
            hidden = model(**batch).last_hidden_state[:, -1]  # [batch, hidden]: left padding puts the last token here
            torch.nn.functional.normalize(hidden.float(), dim=-1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "chunks_per_s": len(texts) / seconds, "tokens_per_s": tokens / seconds}


def bench_sentence_transformers(folder: Path, texts: list[str], dtype: torch.dtype, device: str) -> dict[str, Any] | None:
    if importlib.util.find_spec("sentence_transformers") is None:
        print("sentence-transformers is not installed: its column is skipped (pip install sentence-transformers)")
        return None
    from sentence_transformers import SentenceTransformer, models

    body = models.Transformer(str(folder), model_args={"dtype": dtype}, tokenizer_args={"padding_side": "left"})
    pooling = models.Pooling(body.get_word_embedding_dimension(), pooling_mode="lasttoken")
    encoder = SentenceTransformer(modules=[body, pooling, models.Normalize()], device=device)
    inputs = [t + "<|endoftext|>" for t in texts]
    start = time.perf_counter()
    encoder.encode(inputs, batch_size=BATCH)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "chunks_per_s": len(texts) / seconds}


def synthetic_index(path: Path, size: int, dims: int, rng: random.Random) -> None:
    store = IndexStore.create(path, IndexInfo("synthetic", "synthetic", dims, 256, 32, "dummy", time.time()))
    vectors = np.random.default_rng(0).standard_normal((size, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    from qwick.rag.chunking import Chunk

    with store.transaction():
        for i in range(size):
            text = " ".join(rng.choice(WORDS) for _ in range(40)) + f" token{i}"
            store.add_document(Document(f"d{i}", text, f"d{i}", f"/synthetic/d{i}"), [Chunk(0, text, 60)],
                               vectors[i:i + 1])
    store.close()


def bench_search(path: Path, dims: int, queries: int, rng: random.Random) -> dict[str, float]:
    stand_in = EngineModel(None, None, "synthetic", "synthetic", 0)  # type: ignore[arg-type]  # never embeds
    service = RagService({"s": path}, stand_in)
    service._search("s", "warm", np.ones(dims, np.float32) / dims ** 0.5, "hybrid", 10)  # loads the vectors
    out = {}
    for mode in ("vector", "bm25", "hybrid"):
        times = []
        for _ in range(queries):
            query = " ".join(rng.choice(WORDS) for _ in range(4))
            vector = np.random.default_rng(len(times)).standard_normal(dims).astype(np.float32)
            vector /= np.linalg.norm(vector)
            start = time.perf_counter()
            service._search("s", query, None if mode == "bm25" else vector, mode, 10)
            times.append(time.perf_counter() - start)
        out[f"{mode}_p50_ms"] = statistics.median(times) * 1000
    return out


def query_embedding_p50(llm: LLM, queries: int) -> float:
    model = EngineModel.of(llm)
    times = []
    for i in range(queries):
        start = time.perf_counter()
        run_sync(model.embed_ids([model.query_ids(f"where is the {WORDS[i % len(WORDS)]} market")]))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--chunks", type=int, default=256, help="chunks embedded in the build run")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="index sizes for search")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.chunks, args.sizes, args.queries = min(args.chunks, 32), [1000, 2000], 10
    rng = random.Random(0)
    dtype = getattr(torch, args.dtype)
    results: dict[str, Any] = {"shape": "tiny" if args.tiny else "Qwen3-0.6B", "device": args.device,
                               "dtype": args.dtype}
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(args.tiny, Path(tmp) / "model")
        docs = corpus(Path(tmp) / "docs", args.chunks, rng)
        llm = LLM(folder, dtype=args.dtype, device=args.device, max_model_len=2048, max_num_seqs=BATCH,
                  max_num_batched_tokens=2048)
        results["build"], texts = bench_build(llm, docs, Path(tmp) / "build.sqlite")
        results["query_embedding_p50_ms"] = query_embedding_p50(llm, args.queries)
        dims = llm.model.config.hidden_size
        del llm
        results["transformers"] = bench_transformers(folder, texts, dtype, args.device)
        results["sentence_transformers"] = bench_sentence_transformers(folder, texts, dtype, args.device)
        results["search"] = {}
        for size in args.sizes:
            path = Path(tmp) / f"search{size}.sqlite"
            synthetic_index(path, size, dims, rng)
            results["search"][size] = bench_search(path, dims, args.queries, rng)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def report(r: dict[str, Any]) -> None:
    b = r["build"]
    print(f"\n== rag, {r['shape']} shape, dummy weights, {r['dtype']}, {r['device']} ==")
    print(f"build: {b['chunks']} chunks, {b['tokens']} tokens in {b['seconds']:.1f} s: {b['chunks_per_s']:.1f} "
          f"chunks/s, {b['tokens_per_s']:.0f} tokens/s (chunking, embedding and SQLite writes)")
    for name in ("sentence_transformers", "transformers"):
        peer = r[name]
        if peer is None:
            print(f"{name}: skipped (not installed)")
            continue
        print(f"{name}: {peer['chunks_per_s']:.1f} chunks/s (encoding only) -> qwick build is "
              f"{b['chunks_per_s'] / peer['chunks_per_s']:.2f}x")
    print(f"query embedding p50: {r['query_embedding_p50_ms']:.1f} ms")
    for size, s in r["search"].items():
        print(f"search over {size} chunks: " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))


if __name__ == "__main__":
    raise SystemExit(main())
