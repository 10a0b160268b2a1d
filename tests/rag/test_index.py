"""Building, searching and updating an index on the tiny random model: BM25 carries exact rare words even with
random vectors; stored vectors are exactly `llm.embed` of the chunk in Qwen3-Embedding's document format."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from ragkit import CHUNK_TOKENS, FILES, OVERLAP, rare, write_corpus

from qwick import SamplingParams
from qwick.engine.sync_engine import run_sync
from qwick.rag import RagService, add_to_index, build_index
from qwick.rag.store import IndexStore


@pytest.mark.parametrize("i", [0, 7, 13, 29])
def test_hybrid_search_ranks_the_file_with_the_rare_word_first(service, i):
    hits = run_sync(service.retrieve("docs", f"explain {rare(i)} please", top_k=5))
    assert hits[0].source.endswith(f"f{i:02d}.txt")
    assert hits[0].id.startswith(f"docs/f{i:02d}.txt#")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert set(hits[0].to_dict()) == {"id", "source", "score", "text", "meta"}


def test_bm25_and_vector_modes(service):
    bm25 = run_sync(service.retrieve("docs", rare(3), top_k=3, mode="bm25"))
    assert len(bm25) == 1 or bm25[0].score > bm25[1].score
    assert rare(3) in bm25[0].text
    vector = run_sync(service.retrieve("docs", rare(3), top_k=4, mode="vector"))
    assert len(vector) == 4 and all(-1.0 <= h.score <= 1.0 for h in vector)


def test_stored_vectors_equal_llm_embed_of_the_chunk(index, llm):
    store = IndexStore.open(index)
    try:
        rows = store.conn.execute("SELECT id, text FROM chunks ORDER BY rowid LIMIT 4").fetchall()
        for chunk_id, text in rows:
            expected = np.asarray(llm.embed(text)[0], dtype=np.float32)  # no prefix: the document format
            np.testing.assert_allclose(store.vector_of(chunk_id), expected, atol=1e-5)
        assert store.info.dims == len(expected) and store.info.chunk_tokens == CHUNK_TOKENS
    finally:
        store.close()


def test_query_vector_uses_the_instruction_format(service, llm, model):
    query = "rain in spring"
    (vector,) = run_sync(model.embed_ids([model.query_ids(query)]))
    expected = llm.embed(f"Instruct: {service.task}\nQuery:{query}")[0]
    np.testing.assert_allclose(vector, expected, atol=1e-5)
    assert model.query_ids(query)[-1] == 151643  # <|endoftext|>, where the embedding is read


def test_rerank_scores_equal_llm_score(service, llm):
    hits = run_sync(service.retrieve("docs", f"what is {rare(5)}?", top_k=4, rerank=True))
    expected = llm.score(f"what is {rare(5)}?", [h.text for h in hits])
    assert [h.score for h in hits] == pytest.approx(expected, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.rerank_score == h.score for h in hits)


def test_stats_and_stable_chunk_ids(index):
    store = IndexStore.open(index)
    try:
        stats = store.stats()
        ids = [r[0] for r in store.conn.execute("SELECT id FROM chunks WHERE doc_id = 'docs/f01.txt' ORDER BY n")]
    finally:
        store.close()
    assert stats["documents"] == FILES and stats["chunks"] >= FILES and stats["overlap"] == OVERLAP
    assert ids == [f"docs/f01.txt#{n}" for n in range(len(ids))]


def test_incremental_add_skips_unchanged_embeds_changed_and_deletes_gone(tmp_path, model):
    docs = write_corpus(tmp_path / "docs", 6)
    path = tmp_path / "index.sqlite"
    run_sync(build_index(path, [docs], model, CHUNK_TOKENS, OVERLAP))
    (docs / "f01.txt").write_text("Now this file speaks of quibbleflux only.")
    (docs / "f02.txt").unlink()
    (docs / "new.md").write_text("# New\n\nA new file about snarfwidget.")
    report = run_sync(add_to_index(path, [docs], model))
    assert (report.added, report.unchanged, report.deleted) == (2, 4, 1)
    service = RagService({"i": path}, model)
    assert run_sync(service.retrieve("i", "quibbleflux", 1, "bm25"))[0].source == "docs/f01.txt"
    assert run_sync(service.retrieve("i", "snarfwidget", 1, "bm25"))[0].source == "docs/new.md"
    assert run_sync(service.retrieve("i", rare(2), 5, "bm25")) == []
    assert run_sync(service.retrieve("i", rare(1), 5, "bm25")) == []  # the old text of f01 is gone
    again = run_sync(add_to_index(path, [docs], model))
    assert (again.added, again.unchanged, again.deleted, again.chunks) == (0, 6, 0, 0)


def test_a_failed_build_leaves_the_previous_index_intact(tmp_path, model, index, monkeypatch):
    path = tmp_path / "index.sqlite"
    shutil.copy(index, path)
    before = path.read_bytes()
    docs = write_corpus(tmp_path / "docs", 3)
    calls = []

    async def failing(batch):
        calls.append(len(batch))
        raise RuntimeError("the engine died mid-build")

    monkeypatch.setattr(model, "embed_ids", failing)
    with pytest.raises(RuntimeError, match="mid-build"):
        run_sync(build_index(path, [docs], model, CHUNK_TOKENS, OVERLAP))
    assert calls and path.read_bytes() == before
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temporary file left behind


def test_offline_api_on_the_llm(llm, index):
    hits = llm.retrieve(index, f"explain {rare(3)} please", top_k=2)
    assert hits[0].source.endswith("f03.txt") and len(hits) == 2
    answer = llm.ask(index, f"explain {rare(3)} please", top_k=2,
                     sampling_params=SamplingParams(temperature=0.0, max_tokens=8))
    assert [h.id for h in answer.retrieved] == [h.id for h in hits]
    assert all(c["id"] in {h.id for h in hits} for c in answer.citations)
