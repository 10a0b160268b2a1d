"""Runs the model for a scheduled step: prefill chunks batched together, one batched forward for all decodes."""

from __future__ import annotations

import torch

from qwick.engine.scheduler import PrefillChunk
from qwick.engine.sequence import Sequence
from qwick.model.kv_cache import AttentionMetadata, PagedKVCache, length_groups
from qwick.model.qwen3 import Qwen3ForCausalLM


def group_chunks(chunks: list[PrefillChunk]) -> list[list[PrefillChunk]]:
    """Group chunks of similar length so one forward serves many prompts (weights are read once per group)."""
    ordered = sorted(chunks, key=lambda c: -c.num_tokens)
    return [ordered[rows] for rows in length_groups([c.num_tokens for c in ordered])]


class ModelRunner:
    def __init__(self, model: Qwen3ForCausalLM, cache: PagedKVCache, device: torch.device) -> None:
        self.model = model
        self.cache = cache
        self.device = device

    @torch.inference_mode()
    def prefill(self, chunks: list[PrefillChunk]) -> list[torch.Tensor | None]:
        """Compute the chunks in one padded forward; per chunk, logits [V] float32 if it completes its prompt."""
        width = max(c.num_tokens for c in chunks)
        ids, positions = [], []
        for chunk in chunks:
            seq, start, n = chunk.seq, chunk.seq.num_cached, chunk.num_tokens
            pad = width - n
            ids.append(seq.all_ids[start : start + n] + [0] * pad)
            positions.append(list(range(start, start + n)) + [start + n - 1] * pad)
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)  # [B, T]
        pos = torch.tensor(positions, device=self.device)
        meta = AttentionMetadata.build(pos, [c.seq.block_table for c in chunks], self.cache.block_size,
                                       [c.num_tokens for c in chunks], self.cache.scratch_slot)
        hidden = self.model(input_ids, pos, self.cache, meta)  # [B, T, H]
        rows = [i for i, c in enumerate(chunks) if c.completes]
        logits = iter(self.model.compute_logits(hidden[rows, [chunks[i].num_tokens - 1 for i in rows]]))
        results = [next(logits) if c.completes else None for c in chunks]
        for chunk in chunks:
            chunk.seq.num_cached += chunk.num_tokens
        return results

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
