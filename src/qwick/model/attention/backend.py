"""The attention-backend seam: how a layer's new tokens are stored in the paged KV cache and attend to it.

One backend is chosen per model, once, when the engine is built (select.py); `Attention.forward` calls it for
every layer. The engine asks it which step shapes it runs instead of reading device flags: a grouped step
(padded [B, T] forwards, AttentionMetadata) always works; a flat step (the whole step on one token axis,
FlatMetadata) only where `supports_flat_step`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from qwick.model.attention.flat import FlatMetadata
from qwick.model.attention.metadata import AttentionMetadata
from qwick.model.kv_cache import PagedKVCache

Metadata = AttentionMetadata | FlatMetadata


class AttentionBackend(ABC):
    """Stores a forward's keys/values in the cache and attends; the step shapes it can run."""

    name: str = "?"  # for logs: which path the engine picked
    # the whole step as one flat forward (FlatMetadata); False: padded groups (AttentionMetadata) only
    supports_flat_step: bool = False
    # grouped and flat steps: chunks of at most this many tokens are described by block tables and context
    # lengths (read in place); 0: the backend needs context slots to gather for every chunk
    max_paged_chunk: int = 0
    # flat steps: longer chunks read their context in place too (FlatMetadata.build needs no gather slots)
    in_place_prefill: bool = False

    def reads_in_place(self, tokens: int) -> bool:
        """Whether a chunk of `tokens` new tokens per row gets paged metadata (block tables + lengths)."""
        return tokens <= self.max_paged_chunk

    def describe(self) -> str:
        """One line for the startup log."""
        return f"attention {self.name}"

    def write(self, cache: PagedKVCache, layer: int, k: torch.Tensor, v: torch.Tensor, meta: Metadata) -> None:
        """k, v [B, kv_heads, T, D] into the cache at meta's slots (a flat step's mirror slots too)."""
        if isinstance(meta, FlatMetadata):
            cache.write(layer, k, v, meta.slot_mapping, meta.mirror_tokens, meta.mirror_slots)
        else:
            cache.write(layer, k, v, meta.slot_mapping)

    @abstractmethod
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: PagedKVCache | None,
               meta: Metadata | None, layer: int, scale: float) -> torch.Tensor:
        """q [B, heads, T, D], k/v [B, kv_heads, T, D] of one layer's forward -> [B, T, heads, D]. Writes k/v
        to the cache first when there is one (no cache or no metadata: a fresh prompt, causal over itself)."""
