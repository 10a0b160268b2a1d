"""Batched sampling: penalties, temperature, top-k / top-p / min-p, per-request seeded generators, logprobs.

Order follows vLLM: logit_bias and penalties on the raw logits, then temperature, then the truncations, then
sampling.
Logprobs are reported from the raw model distribution (before penalties and temperature), as vLLM does.
"""

from __future__ import annotations

import math
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


def apply_logit_bias(logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
    """logits [B, V]: each row's {token id: bias} added in one scatter (the loop is over bias entries, not vocab)."""
    row_ids: list[int] = []
    token_ids: list[int] = []
    biases: list[float] = []
    for i, row in enumerate(rows):
        for token, bias in (row.params.logit_bias or {}).items():
            row_ids.append(i)
            token_ids.append(token)
            biases.append(bias)
    if biases:
        index = (torch.tensor(row_ids, device=logits.device), torch.tensor(token_ids, device=logits.device))
        logits.index_put_(index, torch.tensor(biases, dtype=logits.dtype, device=logits.device), accumulate=True)
    return logits


NUCLEUS_HEAD = 256  # top-p without top-k looks for the nucleus among this many most likely tokens first


def _top_k(params: SamplingParams, vocab: int) -> int:
    return params.top_k if params.top_k and 0 < params.top_k < vocab else 0


def _batched_top_k(logits: torch.Tensor, rows: list[SamplingRow]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """When every row samples with the same top-k (e.g. Qwen3's default 20), all their top-k at once: a batched
    topk runs on every thread (one row at a time does not; 2x on 2 cores). Row -> (scaled logits [k], ids [k])."""
    ks = {_top_k(row.params, logits.shape[1]) if not row.params.greedy else -1 for row in rows}
    if len(ks) != 1 or (k := ks.pop()) <= 0:
        return {}
    temperatures = torch.tensor([row.params.temperature for row in rows], dtype=logits.dtype, device=logits.device)
    values, ids = torch.topk(logits / temperatures[:, None], k)  # [B, k] each, sorted descending
    return {i: (values[i], ids[i]) for i in range(len(rows))}


def _truncate(scaled: torch.Tensor, params: SamplingParams,
              head: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep the top-k / top-p / min-p candidates of one row: its logits over the temperature, or with top-k its
    precomputed `head` (scaled top-k logits, ids). Returns (logits, vocab ids or None = all)."""
    top_k = len(head[0]) if head is not None else _top_k(params, scaled.numel())
    top_p = 1.0 if params.top_p is None else params.top_p
    if top_k:
        values, ids = head if head is not None else torch.topk(scaled, top_k)  # sorted descending
        probs = torch.softmax(values, dim=-1) if top_p < 1.0 else None  # top-p within the top-k (vLLM's order)
    elif top_p < 1.0:
        values, ids, probs = _nucleus_head(scaled, top_p)
    else:
        values, ids, probs = scaled, None, None
    if probs is not None:
        # drop a token when the mass before it already reaches top_p; the first (most likely) is always kept,
        # so top_p 0 means that token alone
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        drop[0] = False
        values = values.masked_fill(drop, float("-inf"))
    if params.min_p:  # relative to the most likely token: the same whatever the normalisation
        values = values.masked_fill(values < values.max() + math.log(params.min_p), float("-inf"))
    return values, ids


def _nucleus_head(scaled: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The most likely tokens, sorted, enough to hold the top-p nucleus, with their probabilities under the whole
    distribution. Exact: a model's distribution usually holds its nucleus in a few hundred tokens, found by a
    top-k instead of sorting all 151,936 (~50x faster on CPU); a flat one falls back to the full sort."""
    log_total = torch.logsumexp(scaled, dim=-1)
    for k in (NUCLEUS_HEAD, 16 * NUCLEUS_HEAD, scaled.numel()):
        k = min(k, scaled.numel())
        values, ids = torch.topk(scaled, k) if k < scaled.numel() else torch.sort(scaled, descending=True)
        probs = torch.exp(values - log_total)
        if k == scaled.numel() or float(probs.sum()) >= top_p:
            break
    return values, ids, probs


def _draw(values: torch.Tensor, generator: torch.Generator) -> int:
    """Index of a draw from softmax(values): inverse CDF with one uniform number from the row's own generator,
    so a seeded request gives the same tokens whatever else is in the batch."""
    cdf = torch.cumsum(torch.softmax(values, dim=-1), dim=-1, dtype=torch.float64)  # summed in float64: no drift
    # the generator lives on the sequence's device (a CUDA generator cannot fill a CPU tensor)
    u = float(torch.rand((), dtype=torch.float64, generator=generator, device=generator.device))
    # the first index whose cumulative mass exceeds u * total: a zero-probability token never is
    target = torch.tensor([u * float(cdf[-1])], dtype=torch.float64, device=cdf.device)
    choice = int(torch.searchsorted(cdf, target, right=True))
    return min(choice, values.numel() - 1)


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
    logits = apply_penalties(apply_logit_bias(logits, rows), rows)
    tokens = [0] * len(rows)
    if any(row.params.greedy for row in rows):  # greedy rows are done here (first maximum, as argmax; ~3x faster)
        tokens = logits.max(dim=-1).indices.tolist()
    heads = _batched_top_k(logits, rows)
    for i, row in enumerate(rows):
        if row.params.greedy:
            continue
        head = heads.get(i)
        values, ids = _truncate(logits[i] / row.params.temperature if head is None else logits[i], row.params, head)
        choice = _draw(values, row.generator)
        tokens[i] = int(ids[choice]) if ids is not None else choice
    return SampleResult(tokens, raw_logprobs)


def row_distribution(logits: torch.Tensor, row: SamplingRow, valid_vocab: int
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What `sample` draws one row from, for the speculative verifier: logits [V] (modified in place) through the
    same masks, bias, penalties, temperature and truncations, in the same order. Returns (candidate logits,
    their vocab ids or None = all); a greedy row's are the processed logits, whose first maximum is its token."""
    logits[valid_vocab:] = float("-inf")
    if row.allowed is not None:
        logits.masked_fill_(~row.allowed, float("-inf"))
    if row.banned_ids:
        logits[row.banned_ids] = float("-inf")
    batch = apply_penalties(apply_logit_bias(logits[None], [row]), [row])  # [1, V], a view of `logits`
    if row.params.greedy:
        return batch[0], None
    return _truncate(batch[0] / row.params.temperature, row.params)


def draw(values: torch.Tensor, generator: torch.Generator) -> int:
    """Index of a draw from softmax(values), as `sample` draws (one uniform number from the row's generator)."""
    return _draw(values, generator)
