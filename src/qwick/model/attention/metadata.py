"""What a grouped forward's tokens attend to: `AttentionMetadata`, built once per forward pass [B, T] (a flat
forward's is flat.FlatMetadata)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qwick.model.kv_cache import slots_of

MAX_PADDING = 0.25  # a padded group may hold at most this much padding (fraction of its real entries)


@dataclass
class ContextGroup:
    """Rows of the batch whose keys are gathered together, padded to the group's longest context."""

    rows: slice
    context_slots: torch.Tensor  # [b, S] slots of positions 0..S-1 per row
    mask: torch.Tensor | None  # [b, 1, T, S] bool (True = attend); None when every position is visible


@dataclass
class AttentionMetadata:
    """Where a forward pass's tokens go in the cache and what each of them attends to."""

    slot_mapping: torch.Tensor  # [B * T] physical slot of each new token
    groups: list[ContextGroup]  # empty: a fresh prompt, which attends causally to its own new tokens only
    # Set instead of groups when attention reads the cache in place (cpu_paged.py):
    block_tables: torch.Tensor | None = None  # [B, W] int64 physical blocks of each row, zero-padded
    context_lens: torch.Tensor | None = None  # [B, T] int64 positions each new token attends to (its own + 1)

    @classmethod
    def build(cls, positions: torch.Tensor, block_tables: list[list[int]], block_size: int,
              num_new: list[int] | None = None, scratch_slot: int = -1, paged: bool = False) -> AttentionMetadata:
        """positions [B, T]: each row holds its consecutive positions. Rows with fewer new tokens (`num_new`)
        are padded by repeating their last position; the padding writes its keys to `scratch_slot`.
        Rows sorted by context length (longest first) gather the least padding. `paged`: describe the context
        by block tables and lengths instead, for an attention that reads the cache in place."""
        device = positions.device
        batch, new_tokens = positions.shape
        width = max(len(t) for t in block_tables)
        tables = torch.tensor([t + [0] * (width - len(t)) for t in block_tables], dtype=torch.long, device=device)
        slot_mapping = slots_of(tables, positions, block_size)
        if num_new is not None and min(num_new) < new_tokens:
            assert scratch_slot >= 0
            is_pad = torch.arange(new_tokens, device=device)[None, :] >= torch.tensor(num_new, device=device)[:, None]
            slot_mapping = slot_mapping.masked_fill(is_pad, scratch_slot)
        slot_mapping = slot_mapping.reshape(-1)
        if paged:
            return cls(slot_mapping, [], tables, positions + 1)
        if batch == 1 and int(positions[0, 0]) == 0:  # a fresh prompt attends to its own keys: plain causal
            return cls(slot_mapping, [])
        ends = (positions[:, -1] + 1).tolist()  # context length of each row
        groups = []
        for rows in length_groups(ends):
            kv_len = max(ends[rows])
            cols = torch.arange(kv_len, device=device)
            context_slots = slots_of(tables[rows], cols.expand(rows.stop - rows.start, kv_len), block_size)
            mask = None
            if new_tokens > 1 or min(ends[rows]) != kv_len:
                mask = (cols[None, None, :] <= positions[rows, :, None]).unsqueeze(1)
            groups.append(ContextGroup(rows, context_slots, mask))
        return cls(slot_mapping, groups)


def length_groups(lengths: list[int], slack: int = 0) -> list[slice]:
    """Consecutive runs of rows whose padding to the run's longest length stays within MAX_PADDING, or within
    `slack` entries in all (lengths sorted longest first give the fewest runs)."""
    groups: list[slice] = []
    start = 0
    for i in range(1, len(lengths) + 1):
        run = lengths[start : i + 1]
        padded = max(run) * len(run)
        if i == len(lengths) or (padded > sum(run) * (1 + MAX_PADDING) and padded > sum(run) + slack):
            groups.append(slice(start, i))
            start = i
    return groups
