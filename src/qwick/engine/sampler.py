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


def _sample_shared_top_k(logits: torch.Tensor, rows: list[SamplingRow], picked: list[int]) -> torch.Tensor | None:
    """When the rows `picked` all sample with the same top-k (e.g. Qwen3's default 20), their whole draw at once:
    one batched top-k, top-p / min-p as masks with per-row parameters, one uniform number per row from the row's
    own generator (no host sync: on a GPU the numbers stay there), one batched inverse-CDF search. The same
    arithmetic as the per-row path (_truncate, _draw), so a seeded row draws the same token alone or in a batch.
    Returns the token ids [R] on the logits' device, or None when the rows differ in top-k (or have none)."""
    vocab = logits.shape[1]
    ks = {_top_k(rows[i].params, vocab) for i in picked}
    if len(ks) != 1 or (k := ks.pop()) <= 0:
        return None
    device = logits.device
    params = [rows[i].params for i in picked]
    temperatures = torch.tensor([p.temperature for p in params], dtype=logits.dtype, device=device)
    values, ids = torch.topk(logits[picked] / temperatures[:, None], k)  # [R, k] each, sorted descending
    top_p = torch.tensor([1.0 if p.top_p is None else p.top_p for p in params], dtype=logits.dtype, device=device)
    if any(p.top_p is not None and p.top_p < 1.0 for p in params):
        probs = torch.softmax(values, dim=-1)
        drop = ((torch.cumsum(probs, dim=-1) - probs) >= top_p[:, None]) & (top_p < 1.0)[:, None]
        drop[:, 0] = False  # the most likely token is always kept
        values = values.masked_fill(drop, float("-inf"))
    log_min_p = torch.tensor([math.log(p.min_p) if p.min_p else float("-inf") for p in params],
                             dtype=logits.dtype, device=device)  # -inf: no min-p (nothing is below it)
    values = values.masked_fill(values < values.max(dim=-1, keepdim=True).values + log_min_p[:, None], float("-inf"))
    cdf = torch.cumsum(torch.softmax(values, dim=-1), dim=-1, dtype=torch.float64)  # [R, k]
    uniform = torch.stack([torch.rand((), dtype=torch.float64, generator=rows[i].generator,
                                      device=rows[i].generator.device).to(device) for i in picked])  # [R]
    choice = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None], right=True).clamp_(max=k - 1)  # [R, 1]
    return ids.gather(1, choice)[:, 0]


def apply_masks(logits: torch.Tensor, rows: list[SamplingRow]) -> None:
    """logits [B, V]: structured output's grammar masks and each row's banned ids, in one indexed write each."""
    masks = {i: row.allowed for i, row in enumerate(rows) if row.allowed is not None}
    if masks:
        constrained = list(masks)
        allowed = torch.stack(list(masks.values()))  # [R, V] bool
        logits[constrained] = logits[constrained].masked_fill(~allowed, float("-inf"))
    banned_rows = [i for i, row in enumerate(rows) for _ in row.banned_ids]
    if banned_rows:
        banned_ids = [t for row in rows for t in row.banned_ids]
        logits[banned_rows, banned_ids] = float("-inf")


def _truncate(scaled: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep the top-k / top-p / min-p candidates of one row (its logits over the temperature).
    Returns (logits, vocab ids or None = all)."""
    top_k = _top_k(params, scaled.numel())
    top_p = 1.0 if params.top_p is None else params.top_p
    if top_k:
        values, ids = torch.topk(scaled, top_k)  # sorted descending
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
    """logits [B, V] float32 (modified in place). Ids >= valid_vocab (embedding padding) are never chosen.

    Vectorised over the batch: logprobs, masks, greedy rows and rows sharing one top-k (the common case) take one
    batched op each and one host sync at the end. Still per row: penalties (a Python set of the row's tokens) and
    rows without a shared top-k (their own top-k, or top-p over the whole vocabulary: _truncate, _draw)."""
    logits[:, valid_vocab:] = float("-inf")
    raw_logprobs: list[torch.Tensor | None] = [None] * len(rows)
    asked = [i for i, row in enumerate(rows) if row.params.logprobs is not None]
    if asked:
        for i, row_logprobs in zip(asked, torch.log_softmax(logits[asked], dim=-1), strict=True):
            raw_logprobs[i] = row_logprobs
    apply_masks(logits, rows)
    logits = apply_penalties(apply_logit_bias(logits, rows), rows)
    chosen = torch.zeros(len(rows), dtype=torch.long, device=logits.device)  # [B]
    greedy = [i for i, row in enumerate(rows) if row.params.greedy]
    if greedy:  # first maximum, as argmax; ~3x faster
        chosen[greedy] = logits[greedy].max(dim=-1).indices
    drawn = [i for i, row in enumerate(rows) if not row.params.greedy]
    shared = _sample_shared_top_k(logits, rows, drawn) if drawn else None
    if shared is not None:
        chosen[drawn] = shared
        drawn = []
    tokens = chosen.tolist()  # the step's one host sync
    for i in drawn:
        row = rows[i]
        values, ids = _truncate(logits[i] / row.params.temperature, row.params)
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
