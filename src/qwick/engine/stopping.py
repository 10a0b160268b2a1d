"""Appending a sampled token to a sequence: detokenize, then apply vLLM's stop rules in order."""

from __future__ import annotations

import re
from functools import lru_cache

from qwick.engine.sequence import Sequence


def append_token(seq: Sequence, token: int, max_model_len: int) -> None:
    """Add `token` to `seq`, update its text and decide whether it is finished."""
    seq.output_ids.append(token)
    if seq.thinking is not None:
        seq.thinking.observe(token)
    if token in seq.stop_ids and len(seq.output_ids) > seq.params.min_tokens:
        seq.text += seq.detokenizer.finish()
        seq.finish_reason = "stop"
        is_eos = token not in (seq.params.stop_token_ids or [])
        seq.stop_reason = None if is_eos else token
        return
    previous_len = len(seq.text)
    seq.text += seq.detokenizer.add([token])
    if seq.params.stop_strings and len(seq.output_ids) >= seq.params.min_tokens:
        _check_stop_strings(seq, previous_len)
        if seq.finished:
            return
    if (seq.params.max_tokens is not None and len(seq.output_ids) >= seq.params.max_tokens) or (
        seq.total_len >= max_model_len
    ):
        seq.text += seq.detokenizer.finish()
        seq.finish_reason = "length"


def finish(seq: Sequence, reason: str) -> None:
    """End `seq` now (e.g. its grammar is complete), flushing text the detokenizer still holds."""
    seq.text += seq.detokenizer.finish()
    seq.finish_reason = reason


def fail(seq: Sequence, message: str) -> None:
    """End `seq` with finish_reason "error" (e.g. its grammar failed); `stop_reason` holds the message."""
    seq.text += seq.detokenizer.finish()
    seq.finish_reason = "error"
    seq.stop_reason = message


def _check_stop_strings(seq: Sequence, previous_len: int) -> None:
    """Find the earliest stop string that ends in the new text (it may straddle token boundaries): one regex
    pass over the tail; at one position the first listed stop wins, as in a loop over the list."""
    stops = seq.params.stop_strings
    search_from = max(0, previous_len - max(len(s) for s in stops) + 1)
    match = _stop_pattern(stops).search(seq.text, search_from)
    if match is None:
        return
    at, stop = match.start(), match.group()
    seq.text = seq.text[: at + len(stop)] if seq.params.include_stop_str_in_output else seq.text[:at]
    seq.emitted = min(seq.emitted, len(seq.text))
    seq.finish_reason = "stop"
    seq.stop_reason = stop


@lru_cache(maxsize=256)
def _stop_pattern(stops: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(s) for s in stops))
