"""Split Qwen3 output into reasoning (`<think>...</think>`) and answer, whole or streamed.

`<think>` and `</think>` are added tokens but not *special* ones, so they survive
`skip_special_tokens=True` and can be found in the text. Rules (vLLM's current `qwen3` parser, plus
newline trimming as the Qwen3 chat template does when it re-renders history):

Thinking mode (`thinking_enabled`, or `prompt_opened_think` - the prompt already ends inside `<think>`):
  - a `<think>` at the very start of the output is dropped;
  - with `</think>`: reasoning = text before the first `</think>`, content = text after it;
  - without `</think>`: the thinking was cut short, so everything is reasoning;
  - reasoning loses leading and trailing newlines, content loses leading newlines.
Non-thinking mode (the prompt carried the empty think block): everything is content, except that an
  empty think block (`<think>`, only whitespace, `</think>`, newlines) at the very start is dropped.
  The answer therefore never lands in reasoning when thinking is disabled.
Empty parts are None in `parse_reasoning` and "" in stream deltas; joining all stream deltas gives
exactly `parse_reasoning` of the whole text, however the text was split.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwick.tokenizer.tags import partial_tag_suffix

THINK_START, THINK_END = "<think>", "</think>"


@dataclass
class ReasoningDelta:
    """A streamed piece of reasoning and/or answer text ("" when there is none)."""

    reasoning: str = ""
    content: str = ""


def parse_reasoning(text: str, thinking_enabled: bool = True,
                    prompt_opened_think: bool = False) -> tuple[str | None, str | None]:
    """Return (reasoning_content, content) of a complete output; see the module docstring."""
    if not (thinking_enabled or prompt_opened_think):
        block = _empty_think_block(text)
        if block is not None and block > 0:
            text = text[block:].lstrip("\n")
        return None, text or None
    text = text.removeprefix(THINK_START)
    reasoning, _, content = text.partition(THINK_END)
    return reasoning.strip("\n") or None, content.lstrip("\n") or None


def output_thinks(output_start: str, thinking_enabled: bool, prompt_opened_think: bool = False,
                  structured: bool = False) -> bool:
    """Whether a chat output holds a think block, judged from its start (its first text is enough).

    A structured answer's grammar never writes `<think>`, so there an output that does not open one is all
    answer; otherwise the template's thinking switch decides (a truncated thought is still reasoning)."""
    if structured and thinking_enabled and not prompt_opened_think:
        return output_start.startswith(THINK_START)
    return thinking_enabled


def split_chat_output(text: str, thinking_enabled: bool, prompt_opened_think: bool = False,
                      structured: bool = False) -> tuple[str | None, str | None]:
    """(reasoning_content, content) of a whole chat output: the one split the server and `LLM.chat` share."""
    return parse_reasoning(text, output_thinks(text, thinking_enabled, prompt_opened_think, structured),
                           prompt_opened_think)


class ReasoningStreamParser:
    """Streaming twin of `parse_reasoning`: `feed` each text delta, then `finish` once.

    Holds back only what could still change meaning: a possible partial `<think>`/`</think>` tag, and a
    run of newlines at the end of the reasoning (dropped if `</think>` or the end of output follows).
    """

    def __init__(self, thinking_enabled: bool = True, prompt_opened_think: bool = False) -> None:
        self.thinking = thinking_enabled or prompt_opened_think
        self._state = "start"  # start -> reasoning -> answer_start -> answer (thinking); start -> answer_start -> answer
        self._pending = ""
        self._reasoning_started = False

    def feed(self, delta: str) -> ReasoningDelta:
        self._pending += delta
        return self._step(final=False)

    def finish(self) -> ReasoningDelta:
        return self._step(final=True)

    def _step(self, final: bool) -> ReasoningDelta:
        reasoning = content = ""
        if self._state == "start":
            self._start(final)
        if self._state == "reasoning":
            reasoning = self._reasoning(final)
        if self._state == "answer_start":
            self._pending = self._pending.lstrip("\n")
            if self._pending:
                self._state = "answer"
        if self._state == "answer":
            content, self._pending = self._pending, ""
        return ReasoningDelta(reasoning, content)

    def _start(self, final: bool) -> None:
        """Decide how the output opens: a `<think>` (thinking) or an empty think block (non-thinking)."""
        if self.thinking:
            if not final and len(self._pending) < len(THINK_START) and THINK_START.startswith(self._pending):
                return
            self._pending = self._pending.removeprefix(THINK_START)
            self._state = "reasoning"
            return
        block = _empty_think_block(self._pending)
        if block == -1 and not final:
            return
        if block is not None and block > 0:
            self._pending = self._pending[block:]
            self._state = "answer_start"
        else:
            self._state = "answer"

    def _reasoning(self, final: bool) -> str:
        end = self._pending.find(THINK_END)
        if end >= 0:
            body, rest = self._pending[:end], self._pending[end + len(THINK_END):]
            self._state = "answer_start"
        else:
            keep = 0 if final else partial_tag_suffix(self._pending, THINK_END)
            body, rest = self._pending[:len(self._pending) - keep], self._pending[len(self._pending) - keep:]
        stable = body.rstrip("\n")
        if end < 0 and not final:
            # Trailing newlines are reasoning only if more reasoning follows them, so keep them for now.
            rest = body[len(stable):] + rest
        if not self._reasoning_started:
            stable = stable.lstrip("\n")
            self._reasoning_started = bool(stable)
        self._pending = rest
        return stable


def _empty_think_block(text: str) -> int | None:
    """Length of `<think>` + whitespace + `</think>` at the start of text; -1 if text may still become one."""
    if len(text) < len(THINK_START):
        return -1 if THINK_START.startswith(text) else None
    if not text.startswith(THINK_START):
        return None
    inner = text[len(THINK_START):]
    gap = len(inner) - len(inner.lstrip())
    tail = inner[gap:]
    if tail.startswith(THINK_END):
        return len(THINK_START) + gap + len(THINK_END)
    return -1 if THINK_END.startswith(tail) else None

