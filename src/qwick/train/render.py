"""Rows to token ids and labels: rendered with the model's own chat template, loss on the assistant's tokens only.

What is learned (labels != IGNORE) in a chat, following Qwen3's template:
- every assistant turn as the template renders it, through its closing `<|im_end|>` (not the newline after it);
- earlier turns' reasoning is not learned: the template drops it from turns before the last user message;
- the last turn's `reasoning_content` is learned: it is rendered as `<think>\\n...\\n</think>\\n\\n` and the model
  learns to think before answering;
- the empty block `<think>\\n\\n</think>\\n\\n` the template writes into a turn without reasoning is context,
  not a target: it is exactly what qwick's prompt holds with `enable_thinking=False`, so such rows teach
  non-thinking answers;
- system, user and tool turns, and each `<|im_start|>assistant\\n` header, are context.
"""

from __future__ import annotations

from dataclasses import dataclass

import tokenizers

from qwick.tokenizer import Tokenizer
from qwick.train.data import ChatRow, Row, TextRow

IGNORE = -100  # the label torch's cross-entropy (and transformers) skip
ASSISTANT_OPEN = "<|im_start|>assistant\n"
TURN_END = "<|im_end|>"
EMPTY_THINK = "<think>\n\n</think>\n\n"


@dataclass
class Example:
    """One training sequence; `labels[i]` is the token at position i when it is learned, else IGNORE."""

    input_ids: list[int]
    labels: list[int]
    line: int = 0

    @property
    def num_trained(self) -> int:
        return sum(label != IGNORE for label in self.labels)


class Renderer:
    """Turns validated rows into Examples with the model's tokenizer and chat template."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        # The same tokenizer.json, used for character offsets (qwick's Tokenizer returns ids only).
        self._backend = tokenizers.Tokenizer.from_str(tokenizer.to_json())
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token: prompt/completion rows need one to end a completion")
        self.eos_id = tokenizer.eos_token_id

    def __call__(self, row: Row) -> Example:
        if isinstance(row, TextRow):
            return self.text_example(row)
        text, spans = self.chat_spans(row)
        return self.tokenize_spans(text, spans, row.line)

    def text_example(self, row: TextRow) -> Example:
        # Tokenized apart, as at inference: the prompt's ids are exactly what a later prompt encodes to.
        assert row.completion is not None
        prompt, completion = self.tokenizer.encode(row.prompt), self.tokenizer.encode(row.completion)
        completion += [self.eos_id] if row.complete else []
        return Example(prompt + completion, [IGNORE] * len(prompt) + completion, row.line)

    def chat_spans(self, row: ChatRow) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the [start, end) character spans of the assistant text to learn."""
        text = self.tokenizer.apply_chat_template(row.messages, tools=row.tools, add_generation_prompt=False)
        assert isinstance(text, str)
        spans: list[tuple[int, int]] = []
        start = text.find(ASSISTANT_OPEN)
        while start != -1:
            body = start + len(ASSISTANT_OPEN)
            if text.startswith(EMPTY_THINK, body):
                body += len(EMPTY_THINK)
            end = text.find(TURN_END, body)
            if end == -1:
                raise ValueError("the chat template left an assistant turn without <|im_end|>; qwick's loss "
                                 "mask needs a ChatML template (as every Qwen3 model has)")
            spans.append((body, end + len(TURN_END)))
            start = text.find(ASSISTANT_OPEN, end)
        expected = sum(m["role"] == "assistant" for m in row.messages)
        if len(spans) != expected:
            raise ValueError(f"line {row.line}: the chat template rendered {len(spans)} assistant turns for "
                             f"{expected} assistant messages; qwick's loss mask needs a ChatML template")
        if spans and not row.complete:  # a cut-off answer: do not teach the model to stop there
            spans[-1] = (spans[-1][0], spans[-1][1] - len(TURN_END))
        return text, spans

    def tokenize_spans(self, text: str, spans: list[tuple[int, int]], line: int = 0) -> Example:
        """Tokenize `text` whole; a token is learned when any of its characters lies in a span."""
        encoding = self._backend.encode(text, add_special_tokens=False)
        ids = list(encoding.ids)
        labels = [IGNORE] * len(ids)
        span = 0
        for i, (start, end) in enumerate(encoding.offsets):
            while span < len(spans) and spans[span][1] <= start:
                span += 1
            if span < len(spans) and start < spans[span][1] and end > spans[span][0]:
                labels[i] = ids[i]
        return Example(ids, labels, line)


def truncate(example: Example, max_len: int) -> Example | None:
    """Keep the first max_len tokens; None when nothing learned is left."""
    if len(example.input_ids) <= max_len:
        return example
    cut = Example(example.input_ids[:max_len], example.labels[:max_len], example.line)
    return cut if cut.num_trained else None
