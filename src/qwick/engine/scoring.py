"""Non-sampling requests: scoring (exact logprobs of given continuations) and pooling (last hidden state).

Both run through the same scheduler as generation, so concurrent gate requests batch together and share
cached prefixes. A sequence carrying a `SequenceTask` is prefilled like any prompt, but the runner reads
what the task asks for (logprobs of chosen tokens at chosen positions, or the last final hidden state)
instead of handing logits to the sampler; the sequence then leaves the engine without decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from qwick.engine.scheduler import PrefillChunk
    from qwick.lora.request import LoRARequest

LOGIT_ROWS = 64  # positions whose full-vocabulary logits are materialised at once (bounds memory)


@dataclass
class ScoreSpec:
    """Score each continuation after a shared context: total logprob of its tokens, exact, no sampling."""

    context_ids: list[int]
    continuations: list[list[int]]
    top_logprobs: int = 0  # also return the k most likely tokens at each scored position (completions echo)
    lora_request: LoRARequest | None = None  # score under this adapter (None: the base model)


@dataclass
class PoolSpec:
    """Prefill only; return the last token's final hidden state (after the final norm)."""

    prompt_ids: list[int]
    lora_request: LoRARequest | None = None  # pool under this adapter (None: the base model)


TaskSpec = ScoreSpec | PoolSpec
TopTokens = list[tuple[int, float]]  # (token id, logprob), most likely first


@dataclass
class ScoreOutput:
    request_id: str
    logprobs: list[float]  # total logprob of each continuation, in the order given
    token_logprobs: list[list[float]]  # per continuation, the logprob of each of its tokens
    num_context_tokens: int
    top_logprobs: list[list[TopTokens]] | None = None  # per continuation and token, when ScoreSpec asked


@dataclass
class EmbeddingOutput:
    request_id: str
    embedding: torch.Tensor  # [hidden] float32, the last token's final hidden state, not normalised
    num_prompt_tokens: int


TaskOutput = ScoreOutput | EmbeddingOutput


@dataclass(eq=False)
class SequenceTask:
    """What the runner reads from one non-sampling sequence while prefilling it."""

    targets: dict[int, list[int]]  # position -> token ids whose logprob (given positions <= it) to read there
    valid_vocab: int  # ids at and above are embedding padding: excluded from the softmax, as in sampling
    pool: bool = False  # keep the final hidden state of the last position
    logprobs: dict[int, list[float]] = field(default_factory=dict)  # position -> logprobs of targets[position]
    top_k: int = 0
    top: dict[int, TopTokens] = field(default_factory=dict)  # position -> its top_k tokens, when top_k > 0
    hidden: torch.Tensor | None = None  # [hidden] once pooled

    @property
    def first_position(self) -> int | None:
        """Positions from here on must be computed, not taken from the prefix cache (their logits are read)."""
        return min(self.targets) if self.targets else None


def read_task_outputs(logits_of: Callable[[torch.Tensor], torch.Tensor], chunks: list[PrefillChunk],
                      hidden: torch.Tensor, offsets: list[int]) -> None:
    """hidden [N, H] of a prefill forward, chunk i's tokens from row offsets[i] on: store what each task chunk
    asks for (before num_cached moves). Logits are computed only at the positions some task reads, by
    `logits_of` (hidden [n, H] -> float32 [n, V], which this function may overwrite: the runner's reused
    buffer, so no [64, V] tensors are allocated and page-faulted per step)."""
    rows: list[int] = []
    owners: list[tuple[SequenceTask, int]] = []
    for chunk, offset in zip(chunks, offsets, strict=True):
        task = chunk.seq.task
        if task is None:
            continue
        start, end = chunk.seq.num_cached, chunk.seq.num_cached + chunk.num_tokens
        for position in sorted(p for p in task.targets if start <= p < end):
            rows.append(offset + position - start)
            owners.append((task, position))
        if task.pool and end == chunk.seq.total_len:
            task.hidden = hidden[offset + chunk.num_tokens - 1].float().clone()
    for lo in range(0, len(rows), LOGIT_ROWS):
        owned = owners[lo : lo + LOGIT_ROWS]
        logits = logits_of(hidden[rows[lo : lo + LOGIT_ROWS]])  # [n, V] float32
        logits[:, owned[0][0].valid_vocab :] = float("-inf")  # embedding padding: outside the softmax
        # the logits read here, before the normaliser is taken in place below
        picks = [(i, t) for i, (task, position) in enumerate(owned) for t in task.targets[position]]
        chosen = logits[[i for i, _ in picks], [t for _, t in picks]]  # [picks]
        top_k = max(task.top_k for task, _ in owned)
        top = torch.topk(logits, top_k) if top_k else None
        lse = _logsumexp_(logits)  # [n]
        logprobs = iter((chosen - lse[[i for i, _ in picks]]).tolist())  # in `picks` order
        for i, (task, position) in enumerate(owned):
            # keyed by position: a sequence recomputed after preemption overwrites, never double counts
            task.logprobs[position] = [next(logprobs) for _ in task.targets[position]]
            if task.top_k and top is not None:
                values = (top.values[i, : task.top_k] - lse[i]).tolist()
                task.top[position] = list(zip(top.indices[i, : task.top_k].tolist(), values, strict=True))


def _logsumexp_(x: torch.Tensor) -> torch.Tensor:
    """x [n, V] -> log(sum(exp(x))) per row [n], as log_softmax takes it; x is overwritten (exp(x - max))."""
    top = x.amax(dim=-1, keepdim=True)  # [n, 1]
    return top.squeeze(-1) + x.sub_(top).exp_().sum(dim=-1).log()
