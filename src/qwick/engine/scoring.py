"""Non-sampling requests: scoring (exact logprobs of given continuations) and pooling (last hidden state).

Both run through the same scheduler as generation, so concurrent gate requests batch together and share
cached prefixes. A sequence carrying a `SequenceTask` is prefilled like any prompt, but the runner reads
what the task asks for (logprobs of chosen tokens at chosen positions, or the last final hidden state)
instead of handing logits to the sampler; the sequence then leaves the engine without decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from qwick.engine.scheduler import PrefillChunk
    from qwick.lora.request import LoRARequest
    from qwick.model.qwen3 import Qwen3ForCausalLM

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


def read_task_outputs(model: Qwen3ForCausalLM, chunks: list[PrefillChunk], hidden: torch.Tensor,
                      offsets: list[int]) -> None:
    """hidden [N, H] of a prefill forward, chunk i's tokens from row offsets[i] on: store what each task chunk
    asks for (before num_cached moves). Logits are computed only at the positions some task reads."""
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
        picked = hidden[rows[lo : lo + LOGIT_ROWS]]  # [n, H]
        logits = model.compute_logits(picked)  # [N, V] float32
        logits[:, owners[lo][0].valid_vocab :] = float("-inf")  # in place: log_softmax of a slice is ~3x slower
        logprobs = torch.log_softmax(logits, dim=-1)
        for (task, position), row in zip(owners[lo : lo + LOGIT_ROWS], logprobs, strict=True):
            # keyed by position: a sequence recomputed after preemption overwrites, never double counts
            task.logprobs[position] = row[task.targets[position]].tolist()
            if task.top_k:
                values, ids = torch.topk(row, task.top_k)
                task.top[position] = list(zip(ids.tolist(), values.tolist(), strict=True))
