"""Tracks whether a sequence is inside Qwen3's <think> block and enforces `max_thinking_tokens`.

Budget behaviour (documented in README "Thinking mode"): tokens generated after the opening `<think>`
(or from the first token when the prompt already opened the block) count as thinking. When the count
reaches `max_thinking_tokens` and the model has not closed the block, qwick appends the tokens of
"\n</think>\n\n" itself, one per step, then lets the model write the answer. Budget 0 closes the block
right after `<think>`. Prompts that end with a closed block (enable_thinking=False) are not affected.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum


class ThinkState(Enum):
    EXPECT = "expect"  # the model may open a block with its first token
    INSIDE = "inside"
    DONE = "done"


CLOSING_TEXT = "\n</think>\n\n"
ANSWER_SEPARATOR = "\n\n"  # what Qwen3 writes between </think> and the answer
ASSISTANT_HEADER = "<|im_start|>assistant\n"  # a chat prompt ends with it; the model may then open <think>


@dataclass
class ThinkingTracker:
    start_id: int
    end_id: int
    budget: int | None
    closing_ids: list[int]
    separator_ids: list[int] = field(default_factory=list)  # forced after a block the model closes itself
    state: ThinkState = ThinkState.EXPECT
    thinking_tokens: int = 0
    forced: deque[int] = field(default_factory=deque)

    @classmethod
    def for_prompt(cls, prompt_ids: list[int], start_id: int, end_id: int, budget: int | None,
                   closing_ids: list[int], separator_ids: list[int] | None = None) -> ThinkingTracker:
        last_start = max((i for i, t in enumerate(prompt_ids) if t == start_id), default=-1)
        last_end = max((i for i, t in enumerate(prompt_ids) if t == end_id), default=-1)
        tracker = cls(start_id, end_id, budget, closing_ids, list(separator_ids or []))
        if last_start > last_end:
            tracker.state = ThinkState.INSIDE
            tracker._maybe_force()
        elif last_end >= 0 and last_end >= len(prompt_ids) - 3:  # the prompt ends with a closed (empty) block
            tracker.state = ThinkState.DONE
        return tracker

    def observe(self, token: int) -> None:
        """Update after `token` was appended to the output."""
        if self.state is ThinkState.EXPECT:
            self.state = ThinkState.INSIDE if token == self.start_id else ThinkState.DONE
        elif self.state is ThinkState.INSIDE:
            if token == self.end_id:  # closed by the model, or by our forced tokens (the rest still follows)
                self.state = ThinkState.DONE
                if not self.forced:  # the model closed it: a constrained answer starts after the separator
                    self.forced.extend(self.separator_ids)
                return
            if not self.forced:
                self.thinking_tokens += 1
        self._maybe_force()

    def next_forced(self) -> int | None:
        return self.forced.popleft() if self.forced else None

    def _maybe_force(self) -> None:
        if (self.state is ThinkState.INSIDE and self.budget is not None and not self.forced
                and self.thinking_tokens >= self.budget):
            self.forced.extend(self.closing_ids)
