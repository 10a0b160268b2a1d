"""LoRABatch: which adapter slot each token of one forward pass uses, prepared once for every LoRA Linear."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

NO_ADAPTER = -1  # slot of a row that runs the base model only


@dataclass(frozen=True)
class LoRABatch:
    """The stacked-slot view of a batch: slot s owns columns [s * rank, (s + 1) * rank) of every LoRALinear's
    stacked A/B. A forward computes only the columns of the slots it uses, `cols`, and `mask` zeroes, per token,
    the columns of every other slot (and all of them for base-only rows)."""

    cols: slice  # stacked rank columns the batch touches: from its lowest to its highest used slot
    mask: torch.Tensor | None  # [tokens, cols] 1/0 in the model dtype; None: every token uses the one slot

    @classmethod
    def build(cls, row_slots: list[int], tokens_per_row: int | list[int], rank: int, dtype: torch.dtype,
              device: torch.device) -> LoRABatch | None:
        """row_slots [B]: each row's slot (NO_ADAPTER for none); each row has `tokens_per_row` tokens, row-major
        as in the model's [B, T] input (a list: row i's count, rows one after another as in a flat forward).
        None when no row uses an adapter: the forward is the base model's."""
        used = sorted({s for s in row_slots if s != NO_ADAPTER})
        if not used:
            return None
        lo, hi = used[0], used[-1]
        cols = slice(lo * rank, (hi + 1) * rank)
        if len(used) == 1 and NO_ADAPTER not in row_slots:
            return cls(cols, None)
        repeats = tokens_per_row if isinstance(tokens_per_row, int) else torch.tensor(tokens_per_row, device=device)
        slots = torch.tensor(row_slots, device=device).repeat_interleave(repeats)  # [tokens]
        owner = torch.arange(lo, hi + 1, device=device).repeat_interleave(rank)  # [cols]: slot of each column
        return cls(cols, (slots[:, None] == owner[None, :]).to(dtype))


class LoRAContext:
    """The batch of the forward pass running now, shared by every LoRALinear of one model.

    Set only around one forward (`use`), and always cleared after it, so a wrapped model called outside the
    engine (or after a failed step) is the base model."""

    def __init__(self) -> None:
        self.batch: LoRABatch | None = None

    @contextmanager
    def use(self, batch: LoRABatch | None) -> Iterator[None]:
        self.batch = batch
        try:
            yield
        finally:
            self.batch = None
