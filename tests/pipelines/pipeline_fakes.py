"""A fake Retrieval for the retrieve and answer steps (the step logic, not retrieval itself, is under test)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FakeHit:
    id: str
    source: str
    score: float
    text: str
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FakeAnswer:
    answer: str
    citations: list[dict]
    retrieved: list[FakeHit]

    def to_dict(self) -> dict:
        return {"answer": self.answer, "citations": self.citations, "retrieved": [h.to_dict() for h in self.retrieved]}


class FakeRetrieval:
    """Index "docs" holds three chunks; every query finds the first `top_k` (none for an empty query).
    `delay`: seconds each call sleeps first (a deliberately slow step). Records its calls."""

    def __init__(self, delay: float = 0.0, names: tuple[str, ...] = ("docs",)) -> None:
        self.delay = delay
        self.names = list(names)
        self.calls: list[tuple[str, Any]] = []
        self.chunks = [FakeHit(f"doc{i}#0", f"doc{i}.md", 1.0 - i / 10, f"passage {i}") for i in range(3)]

    def index_names(self) -> list[str]:
        return self.names

    async def retrieve(self, index: str, query: str, top_k: int = 10, mode: str = "hybrid",
                       rerank: bool = False) -> list[FakeHit]:
        self.calls.append(("retrieve", (index, query, top_k, mode, rerank)))
        await asyncio.sleep(self.delay)
        if index not in self.names:
            raise KeyError(f"no index named {index!r}")
        return self.chunks[:top_k] if query else []

    async def answer(self, index: str, question: str, top_k: int = 5, hits: list[Any] | None = None,
                     params: dict | None = None) -> FakeAnswer:
        self.calls.append(("answer", (index, question, top_k, hits, params)))
        await asyncio.sleep(self.delay)
        hits = hits if hits is not None else self.chunks[:top_k]
        return FakeAnswer(f"about {question} [1]", [{"id": hits[0].id, "source": hits[0].source}], hits)
