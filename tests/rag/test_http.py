"""POST /v1/retrieve and /v1/answer on a served tiny model (`qwick serve --index docs=PATH`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ragkit import rare

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from serverkit import MODEL, serving, tiny_llm

from qwick.rag import EngineModel, RagService
from qwick.server import build_app
from qwick.server.app import start_llm


@pytest.fixture(scope="module")
def server(tiny_model_dir, index):
    llm, engine = start_llm(lambda: tiny_llm(tiny_model_dir))
    served = EngineModel.of(llm, engine)
    with serving(build_app(llm, MODEL, client=engine, rag=RagService({"docs": index}, served, served)), llm) as running:
        yield running


def test_retrieve_ranks_the_rare_word_first(server):
    response = server.post("/v1/retrieve", json={"index": "docs", "query": f"explain {rare(11)} please", "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["index"] == "docs" and len(body["data"]) == 3
    assert body["data"][0]["source"].endswith("f11.txt")
    assert set(body["data"][0]) == {"id", "source", "score", "text", "meta"}


def test_reranked_scores_equal_the_score_endpoint(server):
    query = f"what is {rare(6)}?"
    hits = server.post("/v1/retrieve", json={"index": "docs", "query": query, "top_k": 4, "rerank": True}).json()["data"]
    scores = server.post("/v1/score", json={"query": query, "items": [h["text"] for h in hits]}).json()["scores"]
    assert [h["score"] for h in hits] == pytest.approx(scores, abs=1e-4)


@pytest.mark.parametrize("response_format", ["text", "json"])
def test_answer_cites_only_retrieved_chunks(server, response_format):
    response = server.post("/v1/answer", json={"index": "docs", "question": f"what is {rare(2)}?", "top_k": 3,
                                               "rerank": False, "response_format": response_format,
                                               "max_tokens": 24, "temperature": 1.0, "seed": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"answer", "citations", "retrieved", "finish_reason"} <= set(body)
    retrieved = {h["id"] for h in body["retrieved"]}
    assert len(retrieved) == 3 and all(c["id"] in retrieved for c in body["citations"])


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/v1/retrieve", {"index": "nope", "query": "x"}, 404, "index"),
    ("/v1/answer", {"index": "nope", "question": "x"}, 404, "index"),
    ("/v1/retrieve", {"index": "docs"}, 400, "query"),
    ("/v1/retrieve", {"index": "docs", "query": ""}, 400, "query"),
    ("/v1/retrieve", {"index": "docs", "query": "x", "mode": "fuzzy"}, 400, "mode"),
    ("/v1/retrieve", {"index": "docs", "query": "x", "top_k": 0}, 400, "top_k"),
    ("/v1/retrieve", {"index": "docs", "query": "x", "topk": 3}, 400, "topk"),
    ("/v1/retrieve", {"index": "docs", "query": "x", "rerank": "yes"}, 400, "rerank"),
    ("/v1/answer", {"index": "docs", "question": "x", "response_format": "xml"}, 400, "response_format"),
    ("/v1/answer", {"index": "docs", "question": "x", "temperature": -1}, 400, "temperature"),
    ("/v1/retrieve", {"index": "docs", "query": "word " * 1100}, 400, "query"),
    ("/v1/answer", {"index": "docs", "question": "word " * 1100}, 400, "question"),
])
def test_bad_requests_name_the_field(server, path, body, status, param):
    response = server.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


def test_fts_hostile_queries_are_plain_words(server):
    for query in ['"', "AND OR (", "text:x*", "NEAR(a b)"]:
        response = server.post("/v1/retrieve", json={"index": "docs", "query": query, "mode": "bm25"})
        assert response.status_code == 200, response.text


def test_serve_index_flag_is_checked_before_the_model_loads(tmp_path, index):
    from qwick.server.cli import _indexes

    with pytest.raises(ValueError, match="NAME=PATH"):
        _indexes(["docs"])
    with pytest.raises(ValueError, match="does not exist"):
        _indexes([f"docs={tmp_path / 'missing.sqlite'}"])
    with pytest.raises(ValueError, match="given twice"):
        _indexes([f"a={index}", f"a={index}"])
    assert list(_indexes([f"a={index}"])) == ["a"]
