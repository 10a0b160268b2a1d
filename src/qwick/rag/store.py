"""The index file: one SQLite database with the chunks, their documents' metadata, float32 vectors as BLOBs,
an FTS5 table (BM25) over the chunk texts, and a meta table naming the embedding model that made the vectors.

Writers: `create` (a new file; the builder writes it under a temporary name and renames it over the old one, so
a failed build leaves the previous index intact) and `IndexStore.transaction` (incremental add: all or nothing).
Readers open the file read-only for each operation (cheap), so the server's worker threads never share one.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qwick.rag.chunking import Chunk
from qwick.rag.documents import Document

FORMAT = "qwick-index/1"
MAX_QUERY_TERMS = 64
_TERM = re.compile(r"\w+", re.UNICODE)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (doc_id TEXT PRIMARY KEY, file TEXT NOT NULL, source TEXT NOT NULL,
                        sha256 TEXT NOT NULL, meta TEXT NOT NULL);
CREATE INDEX documents_file ON documents(file);
CREATE TABLE chunks (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, n INTEGER NOT NULL,
                     text TEXT NOT NULL, tokens INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE INDEX chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='rowid',
                                           tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
  INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
  INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
"""


class IndexFileError(ValueError):
    """A file that is not a usable qwick index (missing, not SQLite, another format)."""


@dataclass(frozen=True)
class IndexInfo:
    """What the meta table records: the embedding model (by name and weights digest) and the chunking."""

    model: str  # the model folder or hub id the index was built with
    weights_sha256: str  # its weights' digest ("dummy:SEED" for dummy weights): what must match at query time
    dims: int
    chunk_tokens: int
    overlap: int
    load_format: str = "auto"
    created: float = 0.0

    def to_meta(self) -> dict[str, str]:
        return {"format": FORMAT, **{k: json.dumps(v) for k, v in asdict(self).items()}}

    @classmethod
    def from_meta(cls, meta: dict[str, str], path: str) -> IndexInfo:
        if meta.get("format") != FORMAT:
            raise IndexFileError(f"{path} is not a qwick index (format {meta.get('format')!r}, expected {FORMAT!r})")
        fields = cls.__dataclass_fields__
        return cls(**{k: json.loads(v) for k, v in meta.items() if k in fields})


@dataclass(frozen=True)
class StoredChunk:
    rowid: int
    id: str
    doc_id: str
    source: str
    text: str
    meta: dict[str, Any]


class IndexStore:
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.info = IndexInfo.from_meta(meta, path)

    @classmethod
    def create(cls, path: str | Path, info: IndexInfo) -> IndexStore:
        conn = sqlite3.connect(str(path))
        conn.executescript(_SCHEMA)
        conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", list(info.to_meta().items()))
        conn.commit()
        return cls(conn, str(path))

    @classmethod
    def open(cls, path: str | Path, writable: bool = False) -> IndexStore:
        path = Path(path)
        if not path.is_file():
            raise IndexFileError(f"index {str(path)!r} does not exist: build it with `qwick index build`")
        try:
            conn = sqlite3.connect(str(path)) if writable else sqlite3.connect(path.resolve().as_uri() + "?mode=ro",
                                                                                uri=True)
            return cls(conn, str(path))
        except sqlite3.DatabaseError as exc:
            raise IndexFileError(f"{path} is not a qwick index ({exc})") from None

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All the writes inside happen, or none (an exception rolls them back)."""
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('updated', ?)", (json.dumps(time.time()),))
        self.conn.commit()

    # ------------------------------------------------------------------------------------------ writes
    def add_document(self, doc: Document, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """`vectors`: [len(chunks), dims] float32, L2-normalised."""
        assert vectors.shape == (len(chunks), self.info.dims), (vectors.shape, len(chunks), self.info.dims)
        self.conn.execute("INSERT INTO documents(doc_id, file, source, sha256, meta) VALUES (?, ?, ?, ?, ?)",
                          (doc.doc_id, doc.file, doc.source, doc.sha256, json.dumps(doc.meta, ensure_ascii=False)))
        rows = [(f"{doc.doc_id}#{c.n}", doc.doc_id, c.n, c.text, c.tokens, v.astype("<f4").tobytes())
                for c, v in zip(chunks, vectors, strict=True)]
        self.conn.executemany("INSERT INTO chunks(id, doc_id, n, text, tokens, vector) VALUES (?, ?, ?, ?, ?, ?)", rows)

    def delete_document(self, doc_id: str) -> None:
        self.conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        self.conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    # ------------------------------------------------------------------------------------------- reads
    def documents(self) -> dict[str, tuple[str, str]]:
        """doc_id -> (file, sha256)."""
        return {d: (f, h) for d, f, h in self.conn.execute("SELECT doc_id, file, sha256 FROM documents")}

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(rowids [n] int64, vectors [n, dims] float32) of every chunk."""
        rows = self.conn.execute("SELECT rowid, vector FROM chunks ORDER BY rowid").fetchall()
        rowids = np.fromiter((r for r, _ in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(v for _, v in rows), dtype="<f4").reshape(len(rows), self.info.dims)
        return rowids, matrix

    def vector_of(self, chunk_id: str) -> np.ndarray:
        row = self.conn.execute("SELECT vector FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        if row is None:
            raise KeyError(f"no chunk {chunk_id!r} in {self.path}")
        return np.frombuffer(row[0], dtype="<f4")

    def bm25(self, query: str, limit: int) -> list[tuple[int, float]]:
        """(rowid, score) by BM25, best first (score: -bm25, larger is better). Any text is a safe query: its
        words are quoted as FTS5 strings and OR-ed, so quotes, operators and column filters are plain words."""
        match = fts_query(query)
        if not match:
            return []
        rows = self.conn.execute("SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
                                 "ORDER BY bm25(chunks_fts) LIMIT ?", (match, limit)).fetchall()
        return [(r, -s) for r, s in rows]

    def chunks(self, rowids: list[int]) -> dict[int, StoredChunk]:
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        rows = self.conn.execute(
            f"SELECT c.rowid, c.id, c.doc_id, d.source, c.text, d.meta FROM chunks c JOIN documents d "
            f"ON c.doc_id = d.doc_id WHERE c.rowid IN ({marks})", rowids).fetchall()
        return {r[0]: StoredChunk(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows}

    def stats(self) -> dict[str, Any]:
        documents = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks, tokens = self.conn.execute("SELECT count(*), coalesce(sum(tokens), 0) FROM chunks").fetchone()
        updated = self.conn.execute("SELECT value FROM meta WHERE key = 'updated'").fetchone()
        return {"index": self.path, "documents": documents, "chunks": chunks, "tokens": tokens,
                "embedding_model": self.info.model, "weights_sha256": self.info.weights_sha256,
                "dims": self.info.dims, "chunk_tokens": self.info.chunk_tokens, "overlap": self.info.overlap,
                "created": self.info.created, "updated": json.loads(updated[0]) if updated else self.info.created,
                "bytes": Path(self.path).stat().st_size}


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression for free text: each word as a quoted string, OR-ed (no operator survives)."""
    terms = list(dict.fromkeys(t.lower() for t in _TERM.findall(query)))[:MAX_QUERY_TERMS]
    return " OR ".join(f'"{t}"' for t in terms)
