"""Batched sampling: penalties, temperature, top-k / top-p / min-p, per-request seeded generators, logprobs.

Order follows vLLM: penalties on the raw logits, then temperature, then the truncations, then sampling.
Logprobs are reported from the raw model distribution (before penalties and temperature), as vLLM does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qwick.sampling_params import SamplingParams


@dataclass
class SamplingRow:
    """What the sampler needs to know about one sequence at this step."""

    params: SamplingParams  # resolved: no None sampling fields
    generator: torch.Generator
    prompt_ids: list[int]
    output_ids: list[int]
    banned_ids: list[int]  # e.g. EOS while min_tokens is not reached
    allowed: torch.Tensor | None = None  # [V] bool: structured output's grammar mask (None = unconstrained)


@dataclass
class SampleResult:
    token_ids: list[int]
    logprobs: list[torch.Tensor | None]  # per row: [V] raw logprobs when the row asked for them


def apply_penalties(logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
    """logits [B, V]: repetition (prompt + output, HF/vLLM style), presence and frequency (output only)."""
    for i, row in enumerate(rows):
        p = row.params
        if p.repetition_penalty not in (None, 1.0):
            seen = torch.tensor(sorted(set(row.prompt_ids) | set(row.output_ids)), dtype=torch.long,
                                device=logits.device)
            values = logits[i, seen]
            logits[i, seen] = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and row.output_ids:
            ids, counts = torch.tensor(row.output_ids, dtype=torch.long, device=logits.device).unique(return_counts=True)
            logits[i, ids] -= p.frequency_penalty * counts.to(logits.dtype) + p.presence_penalty
    return logits


def _truncate(scaled: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep the top-k / top-p / min-p candidates of one row. Returns (logits, vocab ids or None = all)."""
    top_k = params.top_k if params.top_k and params.top_k > 0 else 0
    if top_k and top_k < scaled.numel():
        values, ids = torch.topk(scaled, top_k)  # sorted descending
    elif (params.top_p or 1.0) < 1.0:
        values, ids = torch.sort(scaled, descending=True)
    else:
        values, ids = scaled, None
    if (params.top_p or 1.0) < 1.0:
        probs = torch.softmax(values, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first token is always kept)
        drop = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        values = values.masked_fill(drop, float("-inf"))
    if params.min_p:
        probs = torch.softmax(values, dim=-1)
        values = values.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
    return values, ids


def sample(logits: torch.Tensor, rows: list[SamplingRow], valid_vocab: int) -> SampleResult:
    """logits [B, V] float32 (modified in place). Ids >= valid_vocab (embedding padding) are never chosen."""
    logits[:, valid_vocab:] = float("-inf")
    raw_logprobs: list[torch.Tensor | None] = [
        torch.log_softmax(logits[i], dim=-1) if row.params.logprobs is not None else None
        for i, row in enumerate(rows)
    ]
    for i, row in enumerate(rows):
        if row.allowed is not None:
            logits[i].masked_fill_(~row.allowed, float("-inf"))
        if row.banned_ids:
            logits[i, row.banned_ids] = float("-inf")
    logits = apply_penalties(logits, rows)
    tokens = logits.max(dim=-1).indices.tolist()  # greedy rows are done here (first maximum, as argmax; ~3x faster)
    for i, row in enumerate(rows):
        if row.params.greedy:
            continue
        values, ids = _truncate(logits[i] / row.params.temperature, row.params)
        probs = torch.softmax(values, dim=-1)
        # Exponential race: argmax(p / E) with E ~ Exp(1) is a draw from p; noise comes from the row's own
        # generator, so a seeded request gives the same tokens whatever else is in the batch.
        noise = torch.empty_like(probs).exponential_(generator=row.generator)
        choice = int(torch.argmax(probs / noise))
        tokens[i] = int(ids[choice]) if ids is not None else choice
    return SampleResult(tokens, raw_logprobs)
