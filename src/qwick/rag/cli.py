"""`qwick index build | add | stats | search` and `qwick ask MODEL --index INDEX "question"`.

The command line above rag/ loads models: `register_rag_commands(sub, load_llm)` takes its loader,
`load_llm(args, model, **overrides) -> LLM`, as the parsed flags describe it. Search and add load the embedding
model recorded in the index unless --model names one (which must be the same weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

LoadLLM = Callable[..., Any]  # (args, model, **EngineArgs overrides) -> LLM
DEFAULT_EMBED_MODEL = "Qwen/Qwen3-Embedding-0.6B"


def register_rag_commands(subparsers: Any, load_llm: LoadLLM) -> None:
    index = subparsers.add_parser("index", help="build and search a retrieval index (one SQLite file)",
                                  description="Build, update, inspect and search a retrieval index: chunks, "
                                              "Qwen3-Embedding vectors and a BM25 table in one SQLite file.")
    sub = index.add_subparsers(dest="index_command", required=True)

    build = sub.add_parser("build", help="(re)build INDEX from documents")
    build.add_argument("index", metavar="INDEX", help="the index file to write (replaced only when complete)")
    _docs_args(build)
    build.add_argument("--model", default=DEFAULT_EMBED_MODEL, help=f"embedding model (default {DEFAULT_EMBED_MODEL})")
    build.add_argument("--chunk-tokens", type=int, default=256, help="largest chunk, in tokens (default 256)")
    build.add_argument("--overlap", type=int, default=32,
                       help="tokens of whole trailing sentences repeated at the next chunk's start (default 32)")
    _model_args(build)
    build.set_defaults(handler=partial(_build, load_llm=load_llm))

    add = sub.add_parser("add", help="add new and changed documents; delete those gone from PATH")
    add.add_argument("index", metavar="INDEX")
    _docs_args(add)
    add.add_argument("--model", default=None, help="embedding model (default: the one recorded in INDEX)")
    _model_args(add)
    add.set_defaults(handler=partial(_add, load_llm=load_llm))

    stats = sub.add_parser("stats", help="documents, chunks, tokens and the embedding model of INDEX (JSON)")
    stats.add_argument("index", metavar="INDEX")
    stats.set_defaults(handler=_stats)

    search = sub.add_parser("search", help="search INDEX: vectors, BM25 or both fused, optionally reranked")
    search.add_argument("index", metavar="INDEX")
    search.add_argument("query")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--mode", default="hybrid", choices=["hybrid", "vector", "bm25"])
    search.add_argument("--rerank", default=None, metavar="RERANK_MODEL",
                        help="rerank the candidates with this model in Qwen3-Reranker's format")
    search.add_argument("--model", default=None, help="embedding model (default: the one recorded in INDEX)")
    search.add_argument("--json", action="store_true", help="print the hits as JSON")
    _model_args(search)
    search.set_defaults(handler=partial(_search, load_llm=load_llm))

    ask = subparsers.add_parser("ask", help="answer a question from an index, citing the retrieved chunks",
                                description="Retrieve from INDEX, then answer with MODEL grounded in the retrieved "
                                            "chunks; citations [n] can only name them (grammar-enforced).")
    ask.add_argument("model", metavar="MODEL", help="the answer model")
    ask.add_argument("question")
    ask.add_argument("--index", required=True)
    ask.add_argument("--top-k", type=int, default=5)
    ask.add_argument("--json", action="store_true",
                     help='answer as JSON {"answer", "citations": [{"id", "source", "quote"?}], "retrieved"}')
    ask.add_argument("--rerank", default=None, metavar="RERANK_MODEL",
                     help="rerank with this model; answers from hits under --min-relevance are refused")
    ask.add_argument("--min-relevance", type=float, default=0.5, help="reranker P(yes) a chunk needs (default 0.5)")
    ask.add_argument("--max-tokens", type=int, default=512)
    ask.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    _model_args(ask)
    ask.set_defaults(handler=partial(_ask, load_llm=load_llm))


def _docs_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", nargs="+", required=True, metavar="PATH",
                        help="files or folders of .txt, .md, .html and .jsonl ({\"id\", \"text\", \"meta\"}) documents")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip empty, binary and undecodable documents with a warning (default: stop on them)")


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--load-format", default=None, choices=["auto", "dummy"],
                        help="dummy = random weights (default: auto, or what the index recorded)")
    parser.add_argument("--seed", type=int, default=None)


def _build(args: argparse.Namespace, load_llm: LoadLLM) -> int:
    from qwick.engine.sync_engine import run_sync
    from qwick.rag.builder import build_index
    from qwick.rag.chunking import check_sizes
    from qwick.rag.documents import read_documents
    from qwick.rag.models import EngineModel
    from qwick.rag.progress import ProgressBar

    check_sizes(args.chunk_tokens, args.overlap)
    read_documents(args.docs, args.skip_bad)  # bad documents fail before the model loads
    model = EngineModel.of(_llm(args, load_llm, args.model, args.load_format or "auto"))
    report = run_sync(build_index(args.index, args.docs, model, args.chunk_tokens, args.overlap,
                                  ProgressBar(sys.stderr), args.skip_bad))
    return _report(report)


def _add(args: argparse.Namespace, load_llm: LoadLLM) -> int:
    from qwick.engine.sync_engine import run_sync
    from qwick.rag.builder import add_to_index
    from qwick.rag.progress import ProgressBar

    info = _info(args.index)
    model = _embedder(args, load_llm, info)
    return _report(run_sync(add_to_index(args.index, args.docs, model, ProgressBar(sys.stderr), args.skip_bad)))


def _stats(args: argparse.Namespace) -> int:
    from qwick.rag.store import IndexStore

    store = IndexStore.open(args.index)
    try:
        print(json.dumps(store.stats(), indent=2))
    finally:
        store.close()
    return 0


def _search(args: argparse.Namespace, load_llm: LoadLLM) -> int:
    from qwick.engine.sync_engine import run_sync
    from qwick.rag.rerank import model_reranker
    from qwick.rag.service import RagService

    info = _info(args.index)
    embedder = _embedder(args, load_llm, info) if args.mode != "bm25" or args.rerank else None
    reranker = None
    if args.rerank:
        reranker = model_reranker(_same_or_load(args, load_llm, args.rerank, info, embedder))
    service = RagService({args.index: args.index}, embedder or _no_model(info), None, reranker)
    hits = _run(lambda: run_sync(service.retrieve(args.index, args.query, args.top_k, args.mode, bool(reranker))))
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
        return 0
    for rank, hit in enumerate(hits, 1):
        print(f"{rank}. {hit.id}  ({hit.source})  score {hit.score:.4f}")
        print("   " + " ".join(hit.text.split())[:300])
    return 0


def _ask(args: argparse.Namespace, load_llm: LoadLLM) -> int:
    from qwick.engine.sync_engine import run_sync
    from qwick.rag.models import EngineModel
    from qwick.rag.rerank import model_reranker
    from qwick.rag.service import RagService
    from qwick.sampling_params import SamplingParams

    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
    info = _info(args.index)
    answerer = EngineModel.of(_llm(args, load_llm, args.model, args.load_format or "auto"))
    embedder = answerer if answerer.weights_sha256 == info.weights_sha256 else _embedder(args, load_llm, info)
    reranker = model_reranker(_same_or_load(args, load_llm, args.rerank, info, answerer)) if args.rerank else None
    service = RagService({args.index: args.index}, embedder, answerer, reranker, min_relevance=args.min_relevance)
    answer = _run(lambda: run_sync(service.answer(args.index, args.question, args.top_k, params=params,
                                                  as_json=args.json)))
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(answer.answer)
    if answer.citations or answer.retrieved:
        print("\nSources:")
        for n, hit in enumerate(answer.retrieved, 1):
            mark = "*" if any(c["id"] == hit.id for c in answer.citations) else " "
            print(f"{mark}[{n}] {hit.id} ({hit.source})")
    return 0


# ------------------------------------------------------------------------------------------------- helpers
def _info(index: str) -> Any:
    from qwick.rag.store import IndexStore

    store = IndexStore.open(index)
    try:
        return store.info
    finally:
        store.close()


def _llm(args: argparse.Namespace, load_llm: LoadLLM, model: str, load_format: str, seed: int | None = None) -> Any:
    overrides: dict[str, Any] = {"load_format": load_format}
    if seed is not None:
        overrides["seed"] = seed
    return load_llm(args, model, **overrides)


def _embedder(args: argparse.Namespace, load_llm: LoadLLM, info: Any) -> Any:
    """The index's embedding model: --model, or the recorded one (with its dummy seed, for dummy weights)."""
    from qwick.rag.builder import check_model
    from qwick.rag.models import EngineModel

    load_format = args.load_format or info.load_format
    seed = None
    if load_format == "dummy" and info.weights_sha256.startswith("dummy:") and args.seed is None:
        seed = int(info.weights_sha256.split(":", 1)[1]) or None
    model = EngineModel.of(_llm(args, load_llm, args.model or info.model, load_format, seed))
    check_model(info, model, args.index)
    return model


def _same_or_load(args: argparse.Namespace, load_llm: LoadLLM, name: str, info: Any, loaded: Any) -> Any:
    from qwick.rag.models import EngineModel

    if loaded is not None and name == loaded.name:
        return loaded
    return EngineModel.of(_llm(args, load_llm, name, args.load_format or "auto"))


def _no_model(info: Any) -> Any:
    """--mode bm25 without a reranker embeds nothing: a stand-in carrying the index's identity, never called."""
    from qwick.rag.models import EngineModel

    return EngineModel(None, None, info.model, info.weights_sha256, 0)  # type: ignore[arg-type]


def _run(call: Callable[[], Any]) -> Any:
    """Errors a search or answer can meet at run time, as the command line's one-line errors."""
    try:
        return call()
    except (TimeoutError, RuntimeError, KeyError) as exc:
        raise ValueError(str(exc).strip("'\"")) from None


def _report(report: Any) -> int:
    for warning in report.skipped:
        print(f"qwick: warning: skipped {warning}", file=sys.stderr)
    print(json.dumps(report.to_dict(), indent=2))
    return 0
