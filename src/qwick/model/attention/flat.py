"""Metadata of a flat forward: every token a step computes, of every sequence, on one token axis.

Why: a forward costs one read of the weights whatever its width (on CPU, ~70 ms for 0.6B in bf16), so a step
whose prefill chunks, decodes and scoring forks run as separate padded [B, T] forwards pays that read once
per forward. Flat, the step is one [1, N] forward with no padding; only attention tells the segments apart:
- short segments (decodes, chunks of at most the backend's `max_paged_chunk` tokens) come first on the axis and
  attend via the paged op, one query per token with its own block table and context length (cpu_paged.py);
- longer chunks follow: each reads its context in place through the prefill op where it runs (bfloat16 on a
  CPU with AVX512-BF16: kernels/cpu_ops.py), else attends by SDPA over its context gathered from the cache (or,
  for a fresh prompt, over its own keys, causally).
Mirror writes let a segment's new keys/values land in a second slot too: a scoring request's forks join the
forward that computes their context, and each fork holds a private copy of the context's partial last block.
Every layer writes all keys/values before any token attends, so a fork reads the context computed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qwick.model.kv_cache import slots_of


@dataclass
class Segment:
    """One sequence's new tokens in a flat forward: positions start .. start + length - 1."""

    block_table: list[int]  # its physical KV blocks, covering every position it attends to
    start: int
    length: int


@dataclass
class LongSegment:
    """A longer chunk: its tokens on the flat axis and the context they see (positions 0 .. start + t)."""

    tokens: slice
    start: int  # position of its first token
    block_table: torch.Tensor  # [W] int64 its sequence's physical blocks (for the in-place prefill op)
    # for SDPA, when not read in place:
    context_slots: torch.Tensor | None  # [1, S] slots of positions 0..S-1; None: a fresh prompt (own keys, causal)
    mask: torch.Tensor | None  # [1, 1, T, S] bool (True = attend)


@dataclass
class FlatMetadata:
    slot_mapping: torch.Tensor  # [N] physical slot of each new token
    num_paged: int  # tokens [0, num_paged) attend through the paged op
    block_tables: torch.Tensor  # [num_paged, W] int64 block table of each paged token's sequence, zero-padded
    context_lens: torch.Tensor  # [num_paged] int64 positions each paged token attends to (its own + 1)
    long: list[LongSegment]
    in_place_prefill: bool  # long segments attend through kernels.cpu_ops.paged_prefill (their SDPA fields are None)
    mirror_tokens: torch.Tensor | None = None  # [M] flat token indices whose keys/values are written twice...
    mirror_slots: torch.Tensor | None = None  # [M] ...at these slots as well

    @classmethod
    def build(cls, paged: list[Segment], long: list[Segment], block_size: int, device: torch.device,
              mirrors: list[tuple[int, int]] | None = None,
              in_place_prefill: bool = False) -> tuple[FlatMetadata, torch.Tensor]:
        """Segments in flat order (paged ones first); mirrors: (flat token index, extra slot) pairs.
        Returns the metadata and positions [1, N]."""
        segments = paged + long
        positions = torch.tensor([p for s in segments for p in range(s.start, s.start + s.length)],
                                 dtype=torch.long, device=device)  # [N]
        width = max(len(s.block_table) for s in segments)
        tables = torch.tensor([s.block_table + [0] * (width - len(s.block_table)) for s in segments],
                              dtype=torch.long, device=device)  # [segments, W]
        lengths = torch.tensor([s.length for s in segments], device=device)
        token_tables = tables.repeat_interleave(lengths, dim=0)  # [N, W]
        slot_mapping = slots_of(token_tables, positions[:, None], block_size).reshape(-1)
        num_paged = sum(s.length for s in paged)
        long_segments = []
        offset = num_paged
        for i, seg in enumerate(long, start=len(paged)):
            tokens = slice(offset, offset + seg.length)
            offset += seg.length
            if in_place_prefill or seg.start == 0:
                long_segments.append(LongSegment(tokens, seg.start, tables[i], None, None))
                continue
            cols = torch.arange(seg.start + seg.length, device=device)  # [S]
            context_slots = slots_of(tables[i : i + 1], cols[None, :], block_size)  # [1, S]
            mask = (cols[None, :] <= positions[tokens, None])[None, None]  # [1, 1, T, S]
            long_segments.append(LongSegment(tokens, seg.start, tables[i], context_slots, mask))
        mirror_tokens = mirror_slots = None
        if mirrors:
            mirror_tokens = torch.tensor([t for t, _ in mirrors], dtype=torch.long, device=device)
            mirror_slots = torch.tensor([s for _, s in mirrors], dtype=torch.long, device=device)
        meta = cls(slot_mapping, num_paged, token_tables[:num_paged], positions[:num_paged] + 1, long_segments,
                   in_place_prefill, mirror_tokens, mirror_slots)
        return meta, positions[None, :]
