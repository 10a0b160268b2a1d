"""Runs the model for a scheduled step: one forward per prefill chunk, one batched forward for all decodes."""

from __future__ import annotations

import torch

from qwick.engine.scheduler import PrefillChunk
from qwick.engine.sequence import Sequence
from qwick.model.kv_cache import AttentionMetadata, PagedKVCache
from qwick.model.qwen3 import Qwen3ForCausalLM


class ModelRunner:
    def __init__(self, model: Qwen3ForCausalLM, cache: PagedKVCache, device: torch.device) -> None:
        self.model = model
        self.cache = cache
        self.device = device

    @torch.inference_mode()
    def prefill(self, chunk: PrefillChunk) -> torch.Tensor | None:
        """Compute `chunk.num_tokens` tokens of one sequence; logits [V] float32 when the chunk completes it."""
        seq = chunk.seq
        start, end = seq.num_cached, seq.num_cached + chunk.num_tokens
        input_ids = torch.tensor([seq.all_ids[start:end]], dtype=torch.long, device=self.device)  # [1, T]
        positions = torch.arange(start, end, device=self.device)[None]
        meta = AttentionMetadata.build(positions, [seq.block_table], self.cache.block_size)
        hidden = self.model(input_ids, positions, self.cache, meta)  # [1, T, H]
        seq.num_cached = end
        return self.model.compute_logits(hidden[0, -1]) if seq.num_cached == seq.total_len else None

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """Feed each sequence's last token; logits [B, V] float32."""
        input_ids = torch.tensor([[s.last_token_id] for s in seqs], dtype=torch.long, device=self.device)  # [B, 1]
        positions = torch.tensor([[s.total_len - 1] for s in seqs], device=self.device)
        meta = AttentionMetadata.build(positions, [s.block_table for s in seqs], self.cache.block_size)
        hidden = self.model(input_ids, positions, self.cache, meta)  # [B, 1, H]
        for s in seqs:
            s.num_cached = s.total_len
        return self.model.compute_logits(hidden[:, -1])
