"""Fixtures: a tiny random Qwen3 (the real tokenizer) that embeds, reranks and answers, and an index of 30
small files (ragkit.write_corpus)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ragkit import CHUNK_TOKENS, OVERLAP, write_corpus

from qwick import LLM
from qwick.engine.sync_engine import run_sync
from qwick.rag import EngineModel, RagService, build_index, model_reranker


@pytest.fixture(scope="package")
def llm(tiny_model_dir) -> LLM:
    return LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=1024, seed=0)


@pytest.fixture(scope="package")
def model(llm) -> EngineModel:
    return EngineModel.of(llm)


@pytest.fixture(scope="package")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "docs")


@pytest.fixture(scope="package")
def index(tmp_path_factory, corpus, model) -> Path:
    path = tmp_path_factory.mktemp("index") / "docs.sqlite"
    run_sync(build_index(path, [corpus], model, CHUNK_TOKENS, OVERLAP))
    return path


@pytest.fixture(scope="package")
def service(index, model) -> RagService:
    return RagService({"docs": index}, model, model, model_reranker(model))
