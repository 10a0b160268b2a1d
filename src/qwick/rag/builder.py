"""Building an index (`qwick index build`) and adding to one (`qwick index add`).

Everything is read and chunked before anything is written, so a bad document fails the command with the index
untouched. A build writes a new file under a temporary name next to INDEX and renames it over INDEX only when
complete (a failed build leaves the previous index as it was); an add runs in one transaction. Chunks are embedded
in batches submitted together, so the engine runs each batch in shared steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qwick.rag.chunking import Chunk, check_sizes, chunk_text
from qwick.rag.documents import Document, read_documents
from qwick.rag.models import EngineModel
from qwick.rag.store import IndexInfo, IndexStore

BATCH = 32  # chunks embedded together
Progress = Callable[[int, int, int], None]  # (chunks embedded, chunks in all, tokens embedded)


class EmbeddingModelMismatchError(ValueError):
    """The index's vectors were made by another embedding model than the one given."""


@dataclass
class BuildReport:
    index: str
    added: int = 0  # documents embedded (new or changed)
    unchanged: int = 0
    deleted: int = 0
    chunks: int = 0  # chunks embedded
    tokens: int = 0  # tokens embedded (with each chunk's <|endoftext|>)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # warnings: bad documents skipped
    ignored: int = 0  # files of other types in the folders

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def check_model(info: IndexInfo, model: EngineModel, index: str) -> None:
    if info.weights_sha256 != model.weights_sha256:
        raise EmbeddingModelMismatchError(
            f"index {index} was built with embedding model {info.model} (weights {info.weights_sha256[:16]}), "
            f"not {model.name} (weights {model.weights_sha256[:16]}): use --model {info.model}, or rebuild the "
            "index with this model")


async def build_index(path: str | Path, docs: Sequence[str | Path], model: EngineModel, chunk_tokens: int = 256,
                      overlap: int = 32, progress: Progress | None = None, skip_bad: bool = False) -> BuildReport:
    check_sizes(chunk_tokens, overlap)
    _check_context(model, chunk_tokens)
    model.check_embedding_format()
    start = time.perf_counter()
    path = Path(path)
    read = read_documents(docs, skip_bad)
    report = BuildReport(str(path), skipped=read.skipped, ignored=read.ignored)
    planned = [(doc, chunk_text(doc.text, model.tokenizer, chunk_tokens, overlap)) for doc in read.documents]
    dims = model.hidden_size or (await model.embed_ids([model.document_ids("dims")])).shape[1]
    info = IndexInfo(model.name, model.weights_sha256, dims, chunk_tokens, overlap, model.load_format, time.time())
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.building-{os.getpid()}")
    temp.unlink(missing_ok=True)
    try:
        store = IndexStore.create(temp, info)
        try:
            with store.transaction():
                await _embed_and_write(store, planned, model, report, progress)
        finally:
            store.close()
        os.replace(temp, path)  # atomic: readers see the old index or the new one
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    report.seconds = time.perf_counter() - start
    return report


async def add_to_index(path: str | Path, docs: Sequence[str | Path], model: EngineModel,
                       progress: Progress | None = None, skip_bad: bool = False) -> BuildReport:
    """New and changed documents are embedded, unchanged ones (same text and meta) skipped; documents whose file
    lies under one of `docs` but is gone (or no longer holds them) are deleted."""
    start = time.perf_counter()
    store = IndexStore.open(path, writable=True)
    try:
        check_model(store.info, model, str(path))
        read = read_documents(docs, skip_bad)
        report = BuildReport(str(path), skipped=read.skipped, ignored=read.ignored)
        existing = store.documents()
        current = {d.doc_id for d in read.documents}
        roots = [Path(p).resolve() for p in docs]
        gone = [d for d, (file, _) in existing.items() if d not in current and _under(Path(file), roots)]
        changed = [d for d in read.documents if existing.get(d.doc_id, ("", ""))[1] != d.sha256]
        report.unchanged = len(read.documents) - len(changed)
        planned = [(d, chunk_text(d.text, model.tokenizer, store.info.chunk_tokens, store.info.overlap))
                   for d in changed]
        with store.transaction():
            for doc_id in gone:
                store.delete_document(doc_id)
            for doc, _ in planned:
                store.delete_document(doc.doc_id)
            await _embed_and_write(store, planned, model, report, progress)
        report.deleted = len(gone)
    finally:
        store.close()
    report.seconds = time.perf_counter() - start
    return report


async def _embed_and_write(store: IndexStore, planned: list[tuple[Document, list[Chunk]]], model: EngineModel,
                           report: BuildReport, progress: Progress | None) -> None:
    import numpy as np

    total = sum(len(chunks) for _, chunks in planned)
    pending: list[tuple[Document, list[Chunk]]] = []
    if progress:
        progress(0, total, 0)
    for i, item in enumerate(planned):
        pending.append(item)
        if sum(len(c) for _, c in pending) < BATCH and i + 1 < len(planned):
            continue
        ids = [model.document_ids(c.text) for _, chunks in pending for c in chunks]
        parts = [await model.embed_ids(ids[j:j + BATCH]) for j in range(0, len(ids), BATCH)]
        vectors = np.concatenate(parts) if parts else np.zeros((0, store.info.dims), np.float32)
        at = 0
        for doc, chunks in pending:
            store.add_document(doc, chunks, vectors[at:at + len(chunks)])
            at += len(chunks)
        report.added += len(pending)
        report.chunks += len(ids)
        report.tokens += sum(len(x) for x in ids)
        pending = []
        if progress:
            progress(report.chunks, total, report.tokens)


def _check_context(model: EngineModel, chunk_tokens: int) -> None:
    if chunk_tokens + 8 > model.max_model_len:  # a chunk may run a few tokens over its count, plus <|endoftext|>
        raise ValueError(f"--chunk-tokens {chunk_tokens} does not fit the embedding model's context of "
                         f"{model.max_model_len} tokens")


def _under(file: Path, roots: list[Path]) -> bool:
    return any(file == root or root in file.parents for root in roots)
