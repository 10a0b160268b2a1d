"""Retrieval: what retrieve and answer steps need of an index service (qwick.rag's RagService is one).

Hits and answers are read duck-typed: a hit has .id, .source, .score, .text, .meta and .to_dict(); an answer
has .answer, .citations, .retrieved and .to_dict()."""

from __future__ import annotations

from typing import Any, Protocol


class Retrieval(Protocol):
    def index_names(self) -> list[str]: ...

    async def retrieve(self, index: str, query: str, top_k: int = 10, mode: str = "hybrid",
                       rerank: bool = False) -> list[Any]: ...

    async def answer(self, index: str, question: str, top_k: int = 5, hits: list[Any] | None = None,
                     params: dict[str, Any] | None = None) -> Any: ...
