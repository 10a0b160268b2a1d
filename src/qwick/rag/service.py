"""RagService: retrieval and grounded answers over named indexes, through the engine-client protocol.

The same object serves `qwick serve --index` (over AsyncLLMEngine), the command line and the offline API (over
InlineEngineClient). Each index needs the embedding model it was built with (checked by weights digest at
construction); answers need an answer model; `rerank=True` needs a reranker (qwick.rag.rerank).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwick.rag.answer import (
    NOTHING_RELEVANT,
    Source,
    answer_schema,
    marker_regex,
    messages,
    parse_json,
    parse_text,
)
from qwick.rag.builder import EmbeddingModelMismatchError, check_model
from qwick.rag.models import DEFAULT_TASK, EngineModel
from qwick.rag.rerank import Reranker
from qwick.rag.search import FUSION_DEPTH, Ranked, VectorCache, check_mode, fuse, vector_ranks, vector_search
from qwick.rag.store import IndexInfo, IndexStore
from qwick.sampling_params import SamplingParams, StructuredOutputsParams

MAX_TOP_K = 1000
DEFAULT_MAX_TOKENS = 512
_ids = itertools.count()
_PARTIAL_MARKER = re.compile(r"\[\d*$")


@dataclass
class Hit:
    """One retrieved chunk. `score`: the reranker's P(yes) when reranked, else the fused RRF score (hybrid),
    the cosine (vector) or the negated BM25 (bm25); larger is better."""

    id: str
    source: str
    score: float
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    rerank_score: float | None = None  # set when reranked: what the relevance threshold of answers reads

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "score": self.score, "text": self.text, "meta": self.meta}


@dataclass
class Answer:
    answer: str
    citations: list[dict[str, Any]]  # {"id", "source", "quote"?}: each names a chunk of `retrieved`
    retrieved: list[Hit]  # the chunks shown to the model, in their citation order ([1] is the first)
    finish_reason: str = "stop"  # the generation's; "length" = cut by max_tokens; "no_relevant_sources"

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "citations": self.citations,
                "retrieved": [h.to_dict() for h in self.retrieved], "finish_reason": self.finish_reason}


class UnknownIndexError(KeyError):
    """The request named an index this service does not hold."""

    def __str__(self) -> str:
        return str(self.args[0])


class RagService:
    def __init__(self, indexes: Mapping[str, str | Path], embedders: EngineModel | Sequence[EngineModel],
                 answerer: EngineModel | None = None, reranker: Reranker | None = None, *,
                 task: str = DEFAULT_TASK, min_relevance: float = 0.5, rerank_depth: int = 20) -> None:
        """`indexes`: name -> index file; `embedders`: the models the indexes were built with (each index gets
        the one whose weights match; none matching is an EmbeddingModelMismatchError naming both);
        `min_relevance`: reranked hits below it are not shown to the answer model (none left: the answer says
        nothing relevant was found)."""
        candidates = [embedders] if isinstance(embedders, EngineModel) else list(embedders)
        self.paths = {name: str(path) for name, path in indexes.items()}
        self.answerer, self.reranker, self.task = answerer, reranker, task
        self.min_relevance, self.rerank_depth = min_relevance, rerank_depth
        self.cache = VectorCache()
        self.owned: list[Any] = []  # engine clients this service shuts down (`close`): e.g. a second embedder's
        self.embedders: dict[str, EngineModel] = {}
        self.infos: dict[str, IndexInfo] = {}
        for name, path in self.paths.items():
            store = IndexStore.open(path)
            try:
                self.infos[name] = store.info
            finally:
                store.close()
            self.embedders[name] = _match(self.infos[name], candidates, path)

    async def close(self) -> None:
        for client in self.owned:
            await client.shutdown()

    def index_names(self) -> list[str]:
        return sorted(self.paths)

    def info(self, index: str) -> IndexInfo:
        return self.infos[self._known(index)]

    async def retrieve(self, index: str, query: str, top_k: int = 10, mode: str = "hybrid",
                       rerank: bool = False) -> list[Hit]:
        self._known(index)
        check_mode(mode)
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be an integer in [1, {MAX_TOP_K}], got {top_k!r}")
        if not query.strip():
            raise ValueError("the query is empty")
        if rerank and self.reranker is None:
            raise ValueError("rerank needs a reranker model, and none is loaded")
        embedder = self.embedders[index]
        vector = None
        if mode != "bm25":
            vector = (await embedder.embed_ids([embedder.query_ids(query, self.task)]))[0]
        depth = max(top_k, self.rerank_depth) if rerank else top_k
        hits = await asyncio.to_thread(self._search, index, query, vector, mode, depth)
        if rerank and hits:
            assert self.reranker is not None
            scores = await self.reranker(query, [h.text for h in hits])
            for hit, score in zip(hits, scores, strict=True):
                hit.score = hit.rerank_score = score
            hits.sort(key=lambda h: -h.score)
        return hits[:top_k]

    async def answer(self, index: str, question: str, top_k: int = 5, hits: list[Hit] | None = None,
                     params: SamplingParams | None = None, *, as_json: bool = False,
                     rerank: bool | None = None) -> Answer:
        """Retrieve (unless `hits` are given), then answer from them with citations only to them. `rerank`:
        default on when a reranker is loaded. `params`: sampling (default greedy, 512 tokens); its
        structured_outputs is replaced by the citation constraint."""
        if self.answerer is None:
            raise ValueError("answers need an answer model, and none is loaded")
        if hits is None:
            use_rerank = self.reranker is not None if rerank is None else rerank
            hits = await self.retrieve(index, question, top_k, "hybrid", use_rerank)
        else:
            self._known(index)
        relevant = [h for h in hits if h.rerank_score is None or h.rerank_score >= self.min_relevance]
        if not relevant:
            return Answer(NOTHING_RELEVANT, [], list(hits), "no_relevant_sources")
        params = params or SamplingParams(temperature=0.0, max_tokens=DEFAULT_MAX_TOKENS)
        shown, prompt_ids, prompt = self._fit(question, relevant, as_json, params.max_tokens)
        sources = [Source(h.id, h.source, h.text) for h in shown]
        constraint = (StructuredOutputsParams(json=answer_schema(sources)) if as_json
                      else StructuredOutputsParams(regex=marker_regex(len(sources))))
        params = replace(params, n=1, structured_outputs=constraint)
        final = None
        async for delta in self.answerer.client.generate(prompt_ids, params, f"rag-answer-{next(_ids)}", prompt):
            final = delta.output if delta.finished else final
        if final is None or final.outputs[0].finish_reason == "abort":
            raise RuntimeError("the answer request was aborted")
        out = final.outputs[0]
        finish = out.finish_reason or "stop"
        if not as_json:
            text = _PARTIAL_MARKER.sub("", out.text) if finish == "length" else out.text  # "[1" cut short
            return Answer(text.strip(), parse_text(text, sources), shown, finish)
        parsed = parse_json(out.text, sources)
        if parsed is None:  # cut by max_tokens: no complete answer, so no citation is claimed
            return Answer(out.text, [], shown, finish)
        return Answer(parsed[0], parsed[1], shown, finish)

    # ------------------------------------------------------------------------------------------ helpers
    def _known(self, index: str) -> str:
        if index not in self.paths:
            known = ", ".join(self.index_names()) or "none"
            raise UnknownIndexError(f"no index named {index!r}; known indexes: {known}")
        return index

    def _search(self, index: str, query: str, vector: Any, mode: str, limit: int) -> list[Hit]:
        store = IndexStore.open(self.paths[index])
        try:
            depth = max(limit, FUSION_DEPTH) if mode == "hybrid" else limit
            bm25 = [Ranked(r, s) for r, s in store.bm25(query, depth)] if mode != "vector" else []
            if mode == "bm25":
                ranked = bm25
            else:
                rowids, matrix = self.cache.get(store)
                if mode == "vector":
                    ranked = vector_search(rowids, matrix, vector, limit)
                else:
                    ranks = vector_ranks(rowids, matrix, vector, depth, [r.rowid for r in bm25])
                    ranked = fuse([ranks, {r.rowid: i for i, r in enumerate(bm25, 1)}])
            ranked = ranked[:limit]
            rows = store.chunks([r.rowid for r in ranked])
        finally:
            store.close()
        return [Hit(rows[r.rowid].id, rows[r.rowid].source, r.score, rows[r.rowid].text, rows[r.rowid].meta)
                for r in ranked if r.rowid in rows]

    def _fit(self, question: str, hits: list[Hit], as_json: bool,
             max_tokens: int | None) -> tuple[list[Hit], list[int], str]:
        """The most hits whose prompt leaves room for the answer (the lowest-ranked are dropped first)."""
        assert self.answerer is not None
        tokenizer, limit = self.answerer.tokenizer, self.answerer.max_model_len
        room = limit - (max_tokens or DEFAULT_MAX_TOKENS)
        for count in range(len(hits), 0, -1):
            shown = hits[:count]
            chat = messages(question, [Source(h.id, h.source, h.text) for h in shown], as_json)
            prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, enable_thinking=False)
            assert isinstance(prompt, str)
            ids = tokenizer.encode(prompt)
            if len(ids) <= room and count > 0:
                return shown, ids, prompt
        raise ValueError(f"the question with even one source does not fit the answer model's context of {limit} "
                         f"tokens (leaving {max_tokens or DEFAULT_MAX_TOKENS} for the answer): shorten it")


def _match(info: IndexInfo, candidates: list[EngineModel], path: str) -> EngineModel:
    for model in candidates:
        if model.weights_sha256 == info.weights_sha256:
            return model
    if len(candidates) == 1:
        check_model(info, candidates[0], path)  # raises, naming both
    names = ", ".join(m.name for m in candidates) or "none"
    raise EmbeddingModelMismatchError(f"index {path} was built with embedding model {info.model} (weights "
                                      f"{info.weights_sha256[:16]}); the loaded models are: {names}")
