"""Grounded answers: every citation names a retrieved chunk, whatever the sampler draws — the grammar makes any
other citation impossible — and JSON answers validate against their schema (citation ids: an enum of the
retrieved ids; quotes: sentences of the cited chunk)."""

from __future__ import annotations

import asyncio
import re

import jsonschema
import pytest
from ragkit import rare

from qwick import SamplingParams
from qwick.engine.sync_engine import run_sync
from qwick.rag import RagService
from qwick.rag.answer import NOTHING_RELEVANT, Source, answer_schema, quotes

SEEDS = 8


def _bias(tokenizer, texts: list[str], value: float) -> dict[int, float]:
    return {tokenizer.encode(t)[0]: value for t in texts}


async def _many(service, question, top_k, params_list, as_json=False):
    hits = await service.retrieve("docs", question, top_k)
    return hits, await asyncio.gather(*(service.answer("docs", question, top_k, hits=hits, params=p,
                                                       as_json=as_json) for p in params_list))


def test_every_citation_names_a_retrieved_chunk_at_temperature_1(service, llm):
    # push the sampler hard towards brackets and digits, out-of-range ones ([7], [9]) included
    bias = _bias(llm.get_tokenizer(), ["[", " [", "]", "1", "2", "3", "7", "9"], 8.0)
    params = [SamplingParams(temperature=1.0, seed=s, max_tokens=24, logit_bias=bias) for s in range(SEEDS)]
    hits, answers = run_sync(_many(service, f"what is {rare(4)}?", 3, params))
    retrieved = {h.id for h in hits}
    cited = 0
    for answer in answers:
        assert [h.id for h in answer.retrieved] == [h.id for h in hits]
        for c in answer.citations:
            assert c["id"] in retrieved
            assert c["source"] == next(h.source for h in hits if h.id == c["id"])
        markers = [int(m) for m in re.findall(r"\[(\d+)\]", answer.answer)]
        assert all(1 <= m <= len(hits) for m in markers)
        assert "[" not in re.sub(r"\[\d+\]", "", answer.answer)  # no stray or unfinished marker
        cited += len(answer.citations)
    assert cited >= SEEDS  # the bias makes citations common: the check above is not vacuous


def test_json_answers_validate_against_their_schema(service, llm):
    bias = _bias(llm.get_tokenizer(), ['"', '"}', ']}', '}', ']', '{"', ' {"', '['], 6.0)
    params = [SamplingParams(temperature=1.0, seed=s, max_tokens=96, logit_bias=bias) for s in range(SEEDS)]
    hits, answers = run_sync(_many(service, f"what is {rare(9)}?", 3, params, as_json=True))
    schema = answer_schema([Source(h.id, h.source, h.text) for h in hits])
    complete = [a for a in answers if a.finish_reason == "stop"]
    assert complete  # the bias closes strings and arrays early
    for answer in complete:
        generated = {"answer": answer.answer,
                     "citations": [{k: v for k, v in c.items() if k != "source"} for c in answer.citations]}
        jsonschema.validate(generated, schema)
        for c in answer.citations:
            chunk = next(h for h in hits if h.id == c["id"])
            assert c["source"] == chunk.source
            assert "quote" not in c or c["quote"] in quotes(chunk.text)
    for answer in answers:
        if answer.finish_reason != "stop":
            assert answer.citations == []  # a cut-off JSON answer claims no citation
    assert set(answers[0].to_dict()) == {"answer", "citations", "retrieved", "finish_reason"}


def test_the_schema_lists_exactly_the_retrieved_ids():
    sources = [Source("a#0", "a", "One. Two sentences here."), Source("b#1", "b", "Other text.")]
    schema = answer_schema(sources)
    ids = [branch["properties"]["id"]["enum"] for branch in schema["properties"]["citations"]["items"]["anyOf"]]
    assert ids == [["a#0"], ["b#1"]]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"answer": "x", "citations": [{"id": "c#2"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"answer": "see [3]", "citations": []}, schema)
    jsonschema.validate({"answer": "see [2]", "citations": [{"id": "a#0", "quote": "One."}]}, schema)


def test_nothing_relevant_says_so_instead_of_answering(index, model, service):
    strict = RagService({"docs": index}, model, model, service.reranker, min_relevance=1.01)
    answer = run_sync(strict.answer("docs", "how do I bake bread?", 3))
    assert answer.answer == NOTHING_RELEVANT and answer.citations == []
    assert answer.finish_reason == "no_relevant_sources" and len(answer.retrieved) == 3
    assert all(h.rerank_score is not None for h in answer.retrieved)


def test_sources_that_do_not_fit_the_context_are_dropped(service, llm):
    hits = run_sync(service.retrieve("docs", rare(1), 5))
    long_hits = [type(h)(h.id, h.source, h.score, h.text * 12, h.meta) for h in hits]
    answer = run_sync(service.answer("docs", "what?", hits=long_hits,
                                     params=SamplingParams(temperature=0.0, max_tokens=8)))
    assert 1 <= len(answer.retrieved) < len(long_hits)
    assert all(c["id"] in {h.id for h in answer.retrieved} for c in answer.citations)
