"""What generation returns: vLLM-shaped RequestOutput / CompletionOutput, and streaming deltas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qwick.tokenizer.tool_calls import ToolCall


@dataclass
class Logprob:
    logprob: float
    rank: int  # 1 = most likely token
    decoded_token: str


# One entry per generated token: token id -> Logprob (the sampled token plus the top-k).
TokenLogprobs = dict[int, Logprob]


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[TokenLogprobs] | None
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it
    reasoning_content: str | None = None  # chat only: the <think> block's text
    content: str | None = None  # chat only: the answer after </think>, less any tool calls
    tool_calls: list[ToolCall] | None = None  # chat with tools=: the parsed hermes calls (None: no call)


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class StreamDelta:
    """New text of one sample since the previous delta. Deltas concatenate exactly to the final text."""

    index: int
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    reasoning_content: str = ""  # chat streams: the part of `text` that is thinking
    content: str = ""  # chat streams: the part of `text` that is the answer
    logprobs: list[TokenLogprobs] | None = None  # one entry per id in `token_ids` when logprobs were requested
