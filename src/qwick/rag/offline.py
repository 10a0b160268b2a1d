"""The offline API (`llm.retrieve`, `llm.ask`) and the command line's driver: RagService over LLMs' own
InlineEngineClients, run to completion from synchronous code.

The LLM answers; it also embeds unless `embed_llm` (the model the index was built with) is given, and reranks
unless `rerank_llm` is. Each model's identity (its weights' digest) is computed once per OfflineRag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qwick.engine.sync_engine import run_sync
from qwick.rag.models import EngineModel, LoadedModel
from qwick.rag.rerank import model_reranker
from qwick.rag.service import Answer, Hit, RagService
from qwick.sampling_params import SamplingParams


class OfflineRag:
    def __init__(self, llm: LoadedModel) -> None:
        self.llm = llm
        self._models: dict[int, EngineModel] = {}

    def model(self, llm: LoadedModel) -> EngineModel:
        if id(llm) not in self._models:
            self._models[id(llm)] = EngineModel.of(llm)
        return self._models[id(llm)]

    def service(self, index: str | Path, embed_llm: LoadedModel | None = None,
                rerank_llm: LoadedModel | None = None, **options: Any) -> RagService:
        answerer = self.model(self.llm)
        embedder = self.model(embed_llm) if embed_llm is not None else answerer
        reranker = model_reranker(self.model(rerank_llm) if rerank_llm is not None else answerer)
        return RagService({str(index): index}, embedder, answerer, reranker, **options)

    def retrieve(self, index: str | Path, query: str, *, top_k: int = 10, mode: str = "hybrid",
                 rerank: bool = False, embed_llm: LoadedModel | None = None,
                 rerank_llm: LoadedModel | None = None) -> list[Hit]:
        service = self.service(index, embed_llm, rerank_llm)
        return run_sync(service.retrieve(str(index), query, top_k, mode, rerank))

    def ask(self, index: str | Path, question: str, *, top_k: int = 5, as_json: bool = False,
            rerank: bool = False, sampling_params: SamplingParams | None = None, min_relevance: float = 0.5,
            embed_llm: LoadedModel | None = None, rerank_llm: LoadedModel | None = None) -> Answer:
        service = self.service(index, embed_llm, rerank_llm, min_relevance=min_relevance)
        return run_sync(service.answer(str(index), question, top_k, params=sampling_params, as_json=as_json,
                                       rerank=rerank))
