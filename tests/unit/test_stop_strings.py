"""Stop strings are found in one regex pass over the new tail: the earliest wins, at one position the first
listed, and one may straddle tokens."""

from __future__ import annotations

import torch

from qwick.engine.sequence import Sequence
from qwick.engine.stopping import append_token
from qwick.sampling_params import SamplingParams


class _Pieces:
    """Token i is pieces[i]: text per token without a real tokenizer."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def add(self, token_ids):
        return "".join(self.pieces[t] for t in token_ids)

    def finish(self):
        return ""


def _run(text: str | list[str], **params) -> Sequence:
    pieces = list(text)
    seq = Sequence("r", 0, [1], SamplingParams(max_tokens=100, **params), torch.Generator(), _Pieces(pieces),
                   frozenset())
    for token in range(len(pieces)):
        append_token(seq, token, 1000)
        if seq.finished:
            break
    return seq


def test_the_earliest_stop_wins_across_tokens():
    seq = _run("say hello world", stop=["world", "lo w"])
    assert seq.text == "say hel" and seq.stop_reason == "lo w" and seq.finish_reason == "stop"


def test_at_one_position_the_first_listed_stop_wins():
    seq = _run(["ab", "cdef"], stop=["cde", "cd"], include_stop_str_in_output=True)
    assert seq.stop_reason == "cde" and seq.text == "abcde"
    seq = _run(["ab", "cdef"], stop=["cd", "cde"], include_stop_str_in_output=True)
    assert seq.stop_reason == "cd" and seq.text == "abcd"


def test_regex_characters_in_stops_are_literal():
    seq = _run("a.b*c(d)", stop=[".*", "(d)"])
    assert seq.text == "a.b*c" and seq.stop_reason == "(d)"
