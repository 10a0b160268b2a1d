"""Prompt lookup: draft tokens from an earlier occurrence of the sequence's last n tokens (vLLM's "ngram")."""

from __future__ import annotations


def propose(tokens: list[int], k: int, n_min: int, n_max: int) -> list[int]:
    """Up to `k` tokens that followed the latest earlier occurrence of the last n tokens of `tokens` (prompt and
    output so far), the longest n in [n_min, n_max] that occurs first; [] when none does. The scan is backwards
    over positions holding the last token, so a long prompt costs a comparison per such position."""
    size = len(tokens)
    for n in range(min(n_max, size - 1), n_min - 1, -1):
        tail = tokens[size - n :]
        last = tail[-1]
        # an occurrence ending at `end` (exclusive) must leave at least one token after it
        for end in range(size - 1, n - 1, -1):
            if tokens[end - 1] == last and tokens[end - n : end] == tail:
                return tokens[end : end + k]
    return []
