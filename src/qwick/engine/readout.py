"""Readouts, the engine's non-sampling requests: scoring (exact logprobs of given continuations) and pooling
(last hidden state).

Both run through the same scheduler as generation, so concurrent gate requests batch together and share
cached prefixes. A sequence carrying a `SequenceReadout` is prefilled like any prompt, but the runner reads
what the readout asks for (logprobs of chosen tokens at chosen positions, or the last final hidden state;
engine/readout_reader.py) instead of handing logits to the sampler; the sequence then leaves the engine
without decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from qwick.lora.request import LoRARequest


@dataclass
class ContinuationSpec:
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


ReadoutSpec = ContinuationSpec | PoolSpec
TopTokens = list[tuple[int, float]]  # (token id, logprob), most likely first


@dataclass
class ContinuationLogprobs:
    request_id: str
    logprobs: list[float]  # total logprob of each continuation, in the order given
    token_logprobs: list[list[float]]  # per continuation, the logprob of each of its tokens
    num_context_tokens: int
    top_logprobs: list[list[TopTokens]] | None = None  # per continuation and token, when ContinuationSpec asked


@dataclass
class EmbeddingOutput:
    request_id: str
    embedding: torch.Tensor  # [hidden] float32, the last token's final hidden state, not normalised
    num_prompt_tokens: int


ReadoutOutput = ContinuationLogprobs | EmbeddingOutput


@dataclass(eq=False)
class SequenceReadout:
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
