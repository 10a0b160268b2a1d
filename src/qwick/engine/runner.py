"""Runs the model over sequences: prefill one prompt, or decode one token for a batch of sequences."""

from __future__ import annotations

import torch

from qwick.engine.sequence import Sequence
from qwick.model.kv_cache import AttentionMetadata, SlotKVCache
from qwick.model.qwen3 import Qwen3ForCausalLM

_GROW_STEP = 256  # positions added at a time when a row outgrows the cache


class ModelRunner:
    def __init__(self, model: Qwen3ForCausalLM, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.device = device
        cfg = model.config
        self.cache = SlotKVCache(cfg.num_hidden_layers, 0, cfg.num_key_value_heads, 0, cfg.head_dim, dtype, device)
        self.free_slots: list[int] = []

    def allocate_slot(self, length: int) -> int:
        if not self.free_slots:
            self.cache.ensure(self.cache.num_slots + 1, self.cache.max_len)
            self.free_slots.append(self.cache.num_slots - 1)
        self.reserve(length)
        return self.free_slots.pop(0)

    def release_slot(self, slot: int) -> None:
        self.free_slots.append(slot)
        self.free_slots.sort()

    def reserve(self, length: int) -> None:
        if length > self.cache.max_len:
            self.cache.ensure(self.cache.num_slots, -(-length // _GROW_STEP) * _GROW_STEP)

    @torch.inference_mode()
    def prefill(self, seq: Sequence) -> torch.Tensor:
        """Compute the uncached prompt tokens of `seq`; return last-position logits [V] float32."""
        ids = seq.all_ids[seq.num_cached :]
        positions = torch.arange(seq.num_cached, seq.total_len, device=self.device)[None]  # [1, T]
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        self.reserve(seq.total_len)
        meta = AttentionMetadata.build(positions, [seq.slot])
        hidden = self.model(input_ids, positions, self.cache, meta)  # [1, T, H]
        seq.num_cached = seq.total_len
        return self.model.compute_logits(hidden[0, -1:])[0]

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """Feed each sequence's last token; return logits [B, V] float32."""
        last = [s.all_ids[-1] for s in seqs]
        input_ids = torch.tensor(last, dtype=torch.long, device=self.device)[:, None]  # [B, 1]
        positions = torch.tensor([s.total_len - 1 for s in seqs], device=self.device)[:, None]
        self.reserve(max(s.total_len for s in seqs))
        meta = AttentionMetadata.build(positions, [s.slot for s in seqs])
        hidden = self.model(input_ids, positions, self.cache, meta)  # [B, 1, H]
        for s in seqs:
            s.num_cached = s.total_len
        return self.model.compute_logits(hidden[:, -1])
