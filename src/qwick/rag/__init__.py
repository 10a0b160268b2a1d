"""Retrieval with citations: index documents into one SQLite file (chunks, Qwen3-Embedding vectors, FTS5 BM25),
search it (vector, BM25, fused, optionally reranked), and answer from the retrieved chunks with citations that
the grammar restricts to them. See README "Retrieval and answers with citations"."""

from qwick.rag.builder import BuildReport, EmbeddingModelMismatchError, add_to_index, build_index
from qwick.rag.documents import DocumentError
from qwick.rag.models import DEFAULT_TASK, EngineModel
from qwick.rag.rerank import Reranker, gate_reranker, model_reranker
from qwick.rag.service import Answer, Hit, RagService, UnknownIndexError
from qwick.rag.store import IndexFileError, IndexInfo

__all__ = ["DEFAULT_TASK", "Answer", "BuildReport", "DocumentError", "EmbeddingModelMismatchError", "EngineModel",
           "Hit", "IndexFileError", "IndexInfo", "RagService", "Reranker", "UnknownIndexError", "add_to_index",
           "build_index", "gate_reranker", "model_reranker"]
