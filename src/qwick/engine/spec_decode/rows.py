"""Splitting a step's logits [R, V] into each sampling sequence's rows (several for a drafting sequence)."""

from __future__ import annotations

import torch

from qwick.engine.sequence import Sequence


def rows_per_sequence(seqs: list[Sequence], logits: torch.Tensor | None
                      ) -> tuple[list[tuple[Sequence, torch.Tensor]], torch.Tensor | None]:
    """(sequence, its row [V] or, with k drafts, its rows [1 + k, V]) in order, and `logits` itself when every
    sequence has one row (the sampler then takes the whole [R, V] tensor without a re-stack)."""
    if logits is None:
        return [], None
    if all(not s.draft_ids for s in seqs):
        return list(zip(seqs, logits, strict=True)), logits
    pairs = []
    start = 0
    for seq in seqs:
        reads = seq.num_reads
        pairs.append((seq, logits[start] if reads == 1 else logits[start : start + reads]))
        start += reads
    assert start == logits.shape[0], "one logit row per sampled position"
    return pairs, None
