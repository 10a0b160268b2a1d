"""Retrieval with citations: index documents into one SQLite file (chunks, Qwen3-Embedding vectors, FTS5 BM25),
search it (vector, BM25, fused, optionally reranked), and answer from the retrieved chunks with citations that
the grammar restricts to them. See README "Retrieval and answers with citations"."""

import importlib
from typing import Any

# Names -> the module that defines them, imported on first use: `qwick index --help` (rag/cli.py, inside this
# package) must not pay for torch and the engine.
_EXPORTS = {
    "BuildReport": "builder", "EmbeddingModelMismatchError": "builder", "add_to_index": "builder",
    "build_index": "builder", "DocumentError": "documents", "DEFAULT_TASK": "models", "EngineModel": "models",
    "Reranker": "rerank", "gate_reranker": "rerank", "model_reranker": "rerank", "Answer": "service",
    "Hit": "service", "RagService": "service", "UnknownIndexError": "service", "IndexFileError": "store",
    "IndexInfo": "store",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qwick.rag' has no attribute {name!r}")
    return getattr(importlib.import_module(f"qwick.rag.{_EXPORTS[name]}"), name)


__all__ = ["DEFAULT_TASK", "Answer", "BuildReport", "DocumentError", "EmbeddingModelMismatchError", "EngineModel",
           "Hit", "IndexFileError", "IndexInfo", "RagService", "Reranker", "UnknownIndexError", "add_to_index",
           "build_index", "gate_reranker", "model_reranker"]
