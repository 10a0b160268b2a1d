"""Fixtures: `server` serves a tiny random Qwen3 with the real Qwen3 tokenizer for the whole session.

Tests talk to it with the official `openai` package (sync and async) and, for what the SDK cannot send,
with httpx.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from serverkit import MODEL, RunningServer, serving, tiny_llm

from qwick.server import build_app
from qwick.server.app import start_llm


@pytest.fixture(scope="session")
def server(tiny_model_dir) -> Iterator[RunningServer]:
    llm, engine = start_llm(lambda: tiny_llm(tiny_model_dir))  # as `qwick serve` does: built on the loop thread
    with serving(build_app(llm, MODEL, client=engine), llm) as running:
        yield running


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="session")
def tokenizer(server):
    return server.llm.get_tokenizer()
