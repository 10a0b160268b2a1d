"""Reading a prefill step's readouts: the logprobs and hidden states each readout sequence asks for."""

from __future__ import annotations

from collections.abc import Callable

import torch

from qwick.engine.readout import SequenceReadout
from qwick.engine.scheduler import PrefillChunk

LOGIT_ROWS = 64  # positions whose full-vocabulary logits are materialised at once (bounds memory)


def read_readouts(logits_of: Callable[[torch.Tensor], torch.Tensor], chunks: list[PrefillChunk],
                      hidden: torch.Tensor, offsets: list[int]) -> None:
    """hidden [N, H] of a prefill forward, chunk i's tokens from row offsets[i] on: store what each readout chunk
    asks for (before num_cached moves). Logits are computed only at the positions some readout reads, by
    `logits_of` (hidden [n, H] -> float32 [n, V], which this function may overwrite: the runner's reused
    buffer, so no [64, V] tensors are allocated and page-faulted per step)."""
    rows: list[int] = []
    owners: list[tuple[SequenceReadout, int]] = []
    for chunk, offset in zip(chunks, offsets, strict=True):
        readout = chunk.seq.readout
        if readout is None:
            continue
        start, end = chunk.seq.num_cached, chunk.seq.num_cached + chunk.num_tokens
        for position in sorted(p for p in readout.targets if start <= p < end):
            rows.append(offset + position - start)
            owners.append((readout, position))
        if readout.pool and end == chunk.seq.total_len:
            readout.hidden = hidden[offset + chunk.num_tokens - 1].float().clone()
    for lo in range(0, len(rows), LOGIT_ROWS):
        owned = owners[lo : lo + LOGIT_ROWS]
        logits = logits_of(hidden[rows[lo : lo + LOGIT_ROWS]])  # [n, V] float32
        logits[:, owned[0][0].valid_vocab :] = float("-inf")  # embedding padding: outside the softmax
        # the logits read here, before the normaliser is taken in place below
        picks = [(i, t) for i, (readout, position) in enumerate(owned) for t in readout.targets[position]]
        chosen = logits[[i for i, _ in picks], [t for _, t in picks]]  # [picks]
        top_k = max(readout.top_k for readout, _ in owned)
        top = torch.topk(logits, top_k) if top_k else None
        lse = _logsumexp_(logits)  # [n]
        logprobs = iter((chosen - lse[[i for i, _ in picks]]).tolist())  # in `picks` order
        for i, (readout, position) in enumerate(owned):
            # keyed by position: a sequence recomputed after preemption overwrites, never double counts
            readout.logprobs[position] = [next(logprobs) for _ in readout.targets[position]]
            if readout.top_k and top is not None:
                values = (top.values[i, : readout.top_k] - lse[i]).tolist()
                readout.top[position] = list(zip(top.indices[i, : readout.top_k].tolist(), values, strict=True))


def _logsumexp_(x: torch.Tensor) -> torch.Tensor:
    """x [n, V] -> log(sum(exp(x))) per row [n], as log_softmax takes it; x is overwritten (exp(x - max))."""
    top = x.amax(dim=-1, keepdim=True)  # [n, 1]
    return top.squeeze(-1) + x.sub_(top).exp_().sum(dim=-1).log()
