"""The models retrieval runs on, each behind an engine client, and Qwen3-Embedding's input formats.

`EngineModel` is what rag needs of a loaded model: its engine client (the server's AsyncLLMEngine or the offline
InlineEngineClient: the same code runs on both), tokenizer, context length and identity. Embeddings follow
Qwen3-Embedding: documents as they are, queries as `Instruct: {task}\\nQuery:{query}`, each ending with
<|endoftext|> whose last hidden state (last-token pooling) is L2-normalised — the tokenization `llm.embed` and
/v1/embeddings use (qwick.gates.prompts.embedding_ids).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from qwick.engine.client import EngineClient
from qwick.gates.prompts import EMBED_EOS, embedding_ids
from qwick.tokenizer import Tokenizer

DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
_ids = itertools.count()


class LoadedModel(Protocol):
    """What `EngineModel.of` reads from an LLM (rag sits below llm.py, so it names no LLM type)."""

    client: EngineClient
    model_name: str
    max_model_len: int
    load_format: str

    def get_tokenizer(self) -> Tokenizer: ...

    def model_identity(self) -> Any: ...


@dataclass
class EngineModel:
    client: EngineClient
    tokenizer: Tokenizer
    name: str  # the model folder or hub id
    weights_sha256: str  # identity of the weights (an index records its embedding model's)
    max_model_len: int
    load_format: str = "auto"
    hidden_size: int | None = None
    _eos: int | None = field(default=None, repr=False)

    @classmethod
    def of(cls, llm: LoadedModel, client: EngineClient | None = None) -> EngineModel:
        """The model an LLM holds, over `client` (default: its own offline client)."""
        identity = llm.model_identity()
        config = getattr(getattr(llm, "model", None), "config", None)
        return cls(client or llm.client, llm.get_tokenizer(), llm.model_name, identity.weights_sha256,
                   llm.max_model_len, getattr(llm, "load_format", "auto"), getattr(config, "hidden_size", None))

    def check_embedding_format(self) -> None:
        """Qwen3-Embedding reads the embedding at <|endoftext|>: the tokenizer must have it."""
        if self.tokenizer.token_to_id(EMBED_EOS) is None:
            raise ValueError(f"the tokenizer of {self.name} has no {EMBED_EOS} token, which Qwen3-Embedding "
                             "pools at: use a Qwen3 tokenizer")

    def query_text(self, query: str, task: str = DEFAULT_TASK) -> str:
        return f"Instruct: {task}\nQuery:{query}"

    def document_ids(self, text: str) -> list[int]:
        return embedding_ids(self.tokenizer, text)

    def query_ids(self, query: str, task: str = DEFAULT_TASK) -> list[int]:
        ids = embedding_ids(self.tokenizer, self.query_text(query, task))
        if len(ids) > self.max_model_len:
            raise ValueError(f"the query is {len(ids)} tokens with its instruction, longer than the embedding "
                             f"model's context of {self.max_model_len} tokens: shorten it")
        return ids

    async def embed_ids(self, batch: list[list[int]]) -> np.ndarray:
        """[len(batch), dims] float32, L2-normalised; submitted together, so the engine batches them."""
        outs = await asyncio.gather(*(self.client.embed(ids, f"rag-embed-{next(_ids)}") for ids in batch))
        matrix = np.stack([o.embedding.float().numpy() for o in outs]).astype(np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.maximum(norms, 1e-12)
