"""Prompt lookup proposals and the speculative_config checks (no model)."""

from __future__ import annotations

import pytest

from qwick.engine.args import EngineArgs
from qwick.engine.spec_decode.config import SpeculativeConfig
from qwick.engine.spec_decode.ngram import propose


def test_proposes_what_followed_the_latest_match_of_the_longest_tail():
    tokens = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    assert propose(tokens, 3, 1, 3) == [7, 8, 5]  # [2, 3] matched at its latest earlier place
    assert propose(tokens, 1, 1, 3) == [7]


def test_longest_match_wins_over_a_later_shorter_one():
    tokens = [4, 5, 6, 10, 11, 6, 12, 4, 5, 6]
    assert propose(tokens, 2, 1, 3) == [10, 11]  # [4, 5, 6] beats the later [6] -> 12


def test_no_match_no_drafts():
    assert propose([1, 2, 3, 4], 4, 1, 3) == []
    assert propose([1, 2, 3, 1, 2], 4, 3, 3) == []  # only a 2-gram repeats
    assert propose([5], 4, 1, 3) == []


def test_drafts_stop_at_the_end_of_the_tokens():
    assert propose([7, 8, 7], 4, 1, 2) == [8, 7]


def test_vllm_defaults_and_shapes():
    assert SpeculativeConfig.parse({"method": "ngram", "num_speculative_tokens": 3}) == SpeculativeConfig(3, 5, 5)
    assert SpeculativeConfig.parse({"num_speculative_tokens": 3, "prompt_lookup_max": 4}) == SpeculativeConfig(3, 4, 4)
    assert SpeculativeConfig.parse('{"num_speculative_tokens": 2, "prompt_lookup_min": 2, "prompt_lookup_max": 3}'
                                   ) == SpeculativeConfig(2, 2, 3)
    assert SpeculativeConfig.parse(None) is None


@pytest.mark.parametrize(("raw", "message"), [
    ({"method": "eagle", "num_speculative_tokens": 2}, "method must be 'ngram'"),
    ({"method": "ngram"}, "num_speculative_tokens is required"),
    ({"num_speculative_tokens": 0}, "num_speculative_tokens must be a positive integer"),
    ({"num_speculative_tokens": True}, "num_speculative_tokens must be a positive integer"),
    ({"num_speculative_tokens": 99}, "must be <= 32"),
    ({"num_speculative_tokens": 2, "prompt_lookup_min": 4, "prompt_lookup_max": 2}, "prompt_lookup_min \\(4\\) must"),
    ({"num_speculative_tokens": 2, "prompt_lookup_max": -1}, "prompt_lookup_max must be a positive integer"),
    ({"num_speculative_tokens": 2, "model": "Qwen/Qwen3-0.6B"}, "unsupported keys \\['model'\\]"),
    ("{not json", "not valid JSON"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_configs_are_refused_naming_the_field(raw, message):
    with pytest.raises(ValueError, match=message):
        SpeculativeConfig.parse(raw)
    with pytest.raises(ValueError, match=message):  # EngineArgs checks it once, before anything loads
        EngineArgs("unused", speculative_config=raw)


def test_compiled_decode_is_refused():
    with pytest.raises(ValueError, match="compile_decode"):
        EngineArgs("unused", speculative_config={"num_speculative_tokens": 2}, compile_decode=True)
