"""A Sequence carries one sample of one request through the engine: tokens, text, stop state."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

from qwick.engine.thinking import ThinkingTracker
from qwick.outputs import TokenLogprobs
from qwick.sampling_params import SamplingParams

if TYPE_CHECKING:
    from qwick.engine.grammar import SequenceConstraint
    from qwick.engine.readout import SequenceReadout


class Detokenizer(Protocol):
    def add(self, token_ids: Iterable[int]) -> str: ...

    def finish(self) -> str: ...


class NullDetokenizer:
    """Used with skip_tokenizer_init=True: token ids only, no text."""

    def add(self, token_ids: Iterable[int]) -> str:
        return ""

    def finish(self) -> str:
        return ""


@dataclass(eq=False)
class Sequence:
    request_id: str
    index: int  # sample number within the request (n > 1)
    prompt_ids: list[int]
    params: SamplingParams  # resolved
    generator: torch.Generator
    detokenizer: Detokenizer
    stop_ids: frozenset[int]  # EOS (unless ignore_eos) and stop_token_ids: end the sequence, not in the text
    thinking: ThinkingTracker | None = None
    constraint: SequenceConstraint | None = None  # structured output: the grammar state of this sample
    readout: SequenceReadout | None = None  # scoring / pooling: read at prefill, never sampled (jobs.py)
    lora_id: int = 0  # LoRA adapter (its lora_int_id; 0 = base model): picks its slot and salts its KV hashes
    output_ids: list[int] = field(default_factory=list)
    streamed: int = 0  # output tokens already handed out in a delta
    text: str = ""  # detokenized output, stop string removed once found
    emitted: int = 0  # characters of `text` already streamed
    logprobs: list[TokenLogprobs] | None = None
    cumulative_logprob: float = 0.0
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    draft_ids: list[int] = field(default_factory=list)  # speculative drafts this step verifies (spec_decode)
    block_table: list[int] = field(default_factory=list)  # physical KV blocks holding positions 0, 1, ...
    num_cached: int = 0  # tokens whose keys/values are in the cache
    arrival_time: float = 0.0
    first_token_time: float | None = None
    last_token_time: float | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def last_token_id(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    def input_ids(self, start: int, count: int) -> list[int]:
        """The tokens at positions [start, start + count) that a forward computes: known ones, then drafts."""
        known = self.all_ids[start : start + count]
        return known + self.draft_ids[: count - len(known)] if len(known) < count else known

    @property
    def num_reads(self) -> int:
        """Logit rows this sequence's last chunk yields: its next token's, one more per draft."""
        return 1 + len(self.draft_ids)

    @property
    def total_len(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def banned_ids(self) -> list[int]:
        """Stop tokens may not be sampled before min_tokens outputs exist."""
        if len(self.output_ids) < self.params.min_tokens:
            return sorted(self.stop_ids)
        return []

    def take_delta(self) -> str:
        """Text not yet streamed, holding back a tail that could still become a stop string."""
        hold = 0 if self.finished else max((len(s) - 1 for s in self.params.stop_strings), default=0)
        end = max(self.emitted, len(self.text) - hold)
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta
