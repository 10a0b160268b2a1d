"""Helpers for the speculative decoding tests (a module of its own: conftest modules share one name)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from qwick import LLM

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 1, "prompt_lookup_max": 3}


@contextlib.contextmanager
def no_speculation(llm: LLM) -> Iterator[None]:
    """The same engine deciding every token with one forward (no drafts proposed)."""
    drafter, llm.engine.scheduler.drafter = llm.engine.scheduler.drafter, None
    try:
        yield
    finally:
        llm.engine.scheduler.drafter = drafter
