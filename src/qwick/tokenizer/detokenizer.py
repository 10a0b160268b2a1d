"""Incremental detokenization: turn a growing list of token ids into text deltas.

Byte-level BPE tokens can end in the middle of a UTF-8 character (CJK, emoji, ZWJ sequences), and the
decoder renders such an unfinished tail as U+FFFD. The detokenizer holds that tail back until the
character completes, and never re-emits or revises text, so the deltas join to exactly `decode(all_ids)`.
"""

from __future__ import annotations

from collections.abc import Iterable

from qwick.tokenizer.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Stream text for one sequence; `add` per step, `finish` once at the end.

    Only a short window of ids (those since the last clean character boundary) is decoded per step. The
    window restarts whenever its text does not end in U+FFFD: the byte-level decoder is then between
    characters, so decode(before + after) == decode(before) + decode(after). (A long run of invalid bytes,
    which real models do not produce, keeps the window open and makes each step decode the whole run.)
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._window: list[int] = []
        self._window_sent = 0  # chars of the window's text already emitted
        self._chunks: list[str] = []

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._chunks)

    def add(self, token_ids: Iterable[int]) -> str:
        """Append ids and return the newly completed text (possibly empty)."""
        self._window.extend(token_ids)
        text = self._tokenizer.decode(self._window, skip_special_tokens=self.skip_special_tokens)
        if text.endswith(REPLACEMENT):
            # Only the last U+FFFD can belong to an unfinished character; everything before it is final.
            return self._emit(text[:-1])
        delta = self._emit(text)
        self._window, self._window_sent = [], 0
        return delta

    def finish(self) -> str:
        """Flush the held-back tail (an unfinished character decodes to U+FFFD, as in `decode`)."""
        text = self._tokenizer.decode(self._window, skip_special_tokens=self.skip_special_tokens)
        delta = self._emit(text)
        self._window, self._window_sent = [], 0
        return delta

    def _emit(self, window_text: str) -> str:
        delta = window_text[self._window_sent:]
        self._window_sent = max(self._window_sent, len(window_text))
        if delta:
            self._chunks.append(delta)
        return delta
