"""POST /v1/rerank (Cohere / Jina shape) and /v1/score in both shapes (qwick's and vLLM's), over one scoring path."""

from __future__ import annotations

import pytest
from serverkit import MODEL

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "France borders Spain.", "I like trains."]


def _qwick_scores(server, query: str, items: list[str]) -> list[float]:
    response = server.post("/v1/score", json={"query": query, "items": items})
    assert response.status_code == 200, response.text
    return response.json()["scores"]


def test_rerank_sorts_by_score_and_matches_the_score_endpoint(server):
    expected = _qwick_scores(server, QUERY, DOCS)
    response = server.post("/v1/rerank", json={"model": MODEL, "query": QUERY, "documents": DOCS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("rerank-") and body["model"] == MODEL and body["usage"]["total_tokens"] > 0
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=1e-3)
        assert "document" not in r


def test_rerank_top_n_return_documents_and_document_objects(server):
    documents = [DOCS[0], {"text": DOCS[1]}, {"text": DOCS[2]}]
    full = server.post("/v1/rerank", json={"query": QUERY, "documents": documents}).json()["results"]
    response = server.post("/v1/rerank", json={"query": QUERY, "documents": documents, "top_n": 2,
                                               "return_documents": True})
    results = response.json()["results"]
    assert [r["index"] for r in results] == [r["index"] for r in full[:2]]
    texts = [DOCS[0], DOCS[1], DOCS[2]]
    assert [r["document"] for r in results] == [{"text": texts[r["index"]]} for r in results]
    everything = server.post("/v1/rerank", json={"query": QUERY, "documents": documents, "top_n": 10}).json()
    assert len(everything["results"]) == 3  # top_n past the end: all of them


def test_vllm_score_shape_for_one_and_for_many(server):
    expected = _qwick_scores(server, QUERY, DOCS[:2])
    many = server.post("/v1/score", json={"model": MODEL, "text_1": QUERY, "text_2": DOCS[:2]})
    assert many.status_code == 200, many.text
    body = many.json()
    assert body["object"] == "list" and body["model"] == MODEL and body["usage"]["prompt_tokens"] > 0
    assert [(d["index"], d["object"]) for d in body["data"]] == [(0, "score"), (1, "score")]
    assert [d["score"] for d in body["data"]] == pytest.approx(expected, abs=1e-3)
    one = server.post("/v1/score", json={"text_1": QUERY, "text_2": DOCS[0]}).json()
    assert [d["score"] for d in one["data"]] == pytest.approx(expected[:1], abs=1e-3)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/score", {"text_1": QUERY, "items": DOCS}, "text_1"),
    ("/v1/score", {"query": QUERY, "text_2": DOCS}, "text_2"),
    ("/v1/score", {"text_1": QUERY, "text_2": []}, "text_2"),
    ("/v1/score", {"text_1": QUERY}, "text_2"),
    ("/v1/score", {"text_2": DOCS}, "text_1"),
    ("/v1/score", {"text_1": 3, "text_2": "x"}, "text_1"),
    ("/v1/score", {}, "query"),
    ("/v1/rerank", {"query": QUERY, "documents": []}, "documents"),
    ("/v1/rerank", {"query": QUERY}, "documents"),
    ("/v1/rerank", {"documents": DOCS}, "query"),
    ("/v1/rerank", {"query": QUERY, "documents": [{"title": "no text"}]}, "documents[0]"),
    ("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n"),
])
def test_bad_score_and_rerank_bodies_are_400s_naming_the_field(server, path, body, param):
    response = server.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] is not None and error["param"].startswith(param)


def test_rerank_with_an_unknown_model_is_a_404(server):
    response = server.post("/v1/rerank", json={"model": "nope", "query": QUERY, "documents": DOCS})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_moderate_alias_takes_text_and_user_id(server):
    body = {"text": "hello there", "userId": "u-1"}
    alias, canonical = server.post("/moderate", json=body), server.post("/v1/moderate", json=body)
    assert alias.status_code == canonical.status_code == 200
    assert {k: v for k, v in alias.json().items() if k not in ("latency_ms", "request_id")} == \
        {k: v for k, v in canonical.json().items() if k not in ("latency_ms", "request_id")}
    assert server.post("/moderate", json={"userId": "u-1"}).json()["error"]["param"] == "text"
