"""Hostile input gives a clear error naming the thing: bad documents, another embedding model, an unknown index,
FTS5 syntax in queries (searched as plain words, never an error), a query longer than the context."""

from __future__ import annotations

import dataclasses
import json

import pytest
from ragkit import CHUNK_TOKENS, OVERLAP, rare

from qwick.engine.sync_engine import run_sync
from qwick.rag import (
    DocumentError,
    EmbeddingModelMismatchError,
    IndexFileError,
    RagService,
    UnknownIndexError,
    add_to_index,
    build_index,
)
from qwick.rag.documents import read_documents


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.txt", b"  \n\n ", "empty"),
    ("blob.txt", b"PK\x03\x04\x00\x00binary", "binary"),
    ("latin.md", "caf\xe9 au lait".encode("latin-1"), "not UTF-8"),
    ("bad.jsonl", b'{"id": "a", "text": "fine"}\n{"id": "b", "text": ""}\n', "bad.jsonl:2"),
    ("notjson.jsonl", b'{"id": 1, "text": "x"}\nnot json\n', "notjson.jsonl:2"),
    ("noid.jsonl", b'{"text": "x"}\n', '"id"'),
    ("page.html", b"<html><script>var x = 1;</script><p> </p></html>", "empty"),
])
def test_bad_documents_are_errors_naming_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DocumentError, match=message) as info:
        read_documents([tmp_path])
    assert name in str(info.value)


def test_skip_bad_skips_with_a_warning_and_keeps_the_good(tmp_path):
    (tmp_path / "good.md").write_text("# Title\n\nGood text.")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    report = read_documents([tmp_path], skip_bad=True)
    assert [d.doc_id for d in report.documents] == [f"{tmp_path.name}/good.md"]
    assert len(report.skipped) == 1 and "empty.txt" in report.skipped[0] and report.ignored == 1


def test_jsonl_and_html_documents(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "x1", "text": "Alpha.", "meta": {"lang": "en"}}) + "\n\n"
                                      + json.dumps({"id": 2, "text": "Beta."}) + "\n")
    (tmp_path / "p.html").write_text("<html><head><title>T</title><style>p{}</style></head>"
                                     "<body><p>One &amp; two.</p><p>Three.</p></body></html>")
    docs = {d.doc_id: d for d in read_documents([tmp_path]).documents}
    assert docs["x1"].meta == {"lang": "en"} and docs["2"].text == "Beta."
    page = docs[f"{tmp_path.name}/p.html"]
    assert page.text == "One & two.\n\nThree." and page.meta == {"title": "T"}


def test_duplicate_ids_and_missing_paths_are_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "same", "text": "a"}\n{"id": "same", "text": "b"}\n')
    with pytest.raises(DocumentError, match="'same' appears twice"):
        read_documents([tmp_path])
    with pytest.raises(DocumentError, match="does not exist"):
        read_documents([tmp_path / "nope"])
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(DocumentError, match="unsupported file type"):
        read_documents([tmp_path / "x.pdf"])


def test_a_bad_document_fails_the_build_before_the_old_index_is_touched(tmp_path, index, model):
    path = tmp_path / "i.sqlite"
    path.write_bytes(index.read_bytes())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "bin.txt").write_bytes(b"\x00\x01")
    with pytest.raises(DocumentError, match=r"bin\.txt"):
        run_sync(build_index(path, [tmp_path / "docs"], model, CHUNK_TOKENS, OVERLAP))
    assert path.read_bytes() == index.read_bytes()


def test_another_embedding_model_is_a_clear_error(index, model, tmp_path):
    other = dataclasses.replace(model, name="other-embedder", weights_sha256="f" * 64)
    with pytest.raises(EmbeddingModelMismatchError, match="other-embedder") as info:
        RagService({"docs": index}, other)
    assert model.name in str(info.value)
    copy = tmp_path / "i.sqlite"
    copy.write_bytes(index.read_bytes())
    with pytest.raises(EmbeddingModelMismatchError, match="built with embedding model"):
        run_sync(add_to_index(copy, [tmp_path], other))


def test_unknown_index_names_the_known_ones(service):
    with pytest.raises(UnknownIndexError, match="no index named 'nope'; known indexes: docs"):
        run_sync(service.retrieve("nope", "x"))


def test_not_an_index(tmp_path, model):
    (tmp_path / "x.sqlite").write_text("hello")
    with pytest.raises(IndexFileError, match="not a qwick index"):
        RagService({"x": tmp_path / "x.sqlite"}, model)
    with pytest.raises(IndexFileError, match="does not exist"):
        RagService({"x": tmp_path / "missing.sqlite"}, model)


@pytest.mark.parametrize("query", ['"', '"unbalanced', "AND OR NOT", "a AND", "NEAR(a b, 2)", "text:weather",
                                   "*", "wea*", "(((", "-rain", "^spring", "{x y}: z", "'; DROP TABLE chunks; --",
                                   "\x00", "ééé ñ 東京", "+"])
def test_fts_hostile_queries_never_raise(service, query):
    for mode in ("bm25", "hybrid"):
        hits = run_sync(service.retrieve("docs", query, 3, mode))
        assert isinstance(hits, list)
    assert run_sync(service.retrieve("docs", f'"{rare(2)}" OR', 1, "bm25"))[0].source.endswith("f02.txt")


def test_bad_search_arguments(service):
    with pytest.raises(ValueError, match="mode must be one of"):
        run_sync(service.retrieve("docs", "x", 3, "fuzzy"))
    with pytest.raises(ValueError, match="top_k"):
        run_sync(service.retrieve("docs", "x", 0))
    with pytest.raises(ValueError, match="empty"):
        run_sync(service.retrieve("docs", "   "))


def test_a_query_longer_than_the_context_is_an_error(service):
    with pytest.raises(ValueError, match="longer than the embedding model's context of 1024"):
        run_sync(service.retrieve("docs", "word " * 1100))


def test_each_index_gets_the_embedder_it_was_built_with(index, model):
    other = dataclasses.replace(model, name="other-embedder", weights_sha256="f" * 64)
    service = RagService({"docs": index}, [other, model])
    assert service.embedders["docs"] is model
