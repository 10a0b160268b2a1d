import pytest

from qwick.sampling_params import MAX_STOP_CHARS, MAX_STOP_STRINGS, GenerationDefaults, SamplingParams


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 0}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"min_p": 1.1}, "min_p"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"min_tokens": 5, "max_tokens": 2}, "min_tokens"),
        ({"logprobs": 21}, "logprobs"),
        ({"seed": "7"}, "seed"),
        ({"stop": [None]}, "stop"),
        ({"logit_bias": {5: 101.0}}, "logit_bias"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias"),
        ({"logit_bias": {5: float("nan")}}, "logit_bias"),
        ({"stop": ["ok", 3]}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"max_thinking_tokens": -1}, "max_thinking_tokens"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_error_message_states_the_allowed_range():
    with pytest.raises(ValueError, match=r"top_p must be in \[0, 1\], got 1.5"):
        SamplingParams(top_p=1.5)


def test_unset_sampling_fields_come_from_generation_config():
    defaults = GenerationDefaults.from_dict({"temperature": 0.6, "top_k": 20, "top_p": 0.95,
                                             "eos_token_id": [151645, 151643]})
    resolved = SamplingParams(top_p=0.5).resolved(defaults)
    assert (resolved.temperature, resolved.top_k, resolved.top_p) == (0.6, 20, 0.5)
    assert defaults.eos_token_ids == (151645, 151643)


def test_explicit_zero_temperature_is_kept_as_greedy():
    resolved = SamplingParams(temperature=0).resolved(GenerationDefaults(temperature=0.6))
    assert resolved.greedy


def test_generation_config_without_sampling_means_greedy():
    assert GenerationDefaults.from_dict({"do_sample": False, "temperature": 0.7}).temperature == 0.0


def test_single_stop_string_is_normalised_to_a_tuple():
    assert SamplingParams(stop="END").stop_strings == ("END",)


def test_empty_stop_strings_are_ignored():
    assert SamplingParams(stop=["", "END", ""]).stop_strings == ("END",)
    assert SamplingParams(stop="").stop_strings == ()


@pytest.mark.parametrize("stop", [[f"s{i}" for i in range(MAX_STOP_STRINGS + 1)], ["x" * (MAX_STOP_CHARS + 1)],
                                  ["x" * 2048, "y" * 2049]])
def test_stop_lists_are_capped(stop):
    with pytest.raises(ValueError, match=f"^stop allows at most {MAX_STOP_STRINGS} strings of {MAX_STOP_CHARS}"):
        SamplingParams(stop=stop)


def test_stop_lists_at_the_cap_are_accepted():
    assert len(SamplingParams(stop=[f"s{i}" for i in range(MAX_STOP_STRINGS)]).stop_strings) == MAX_STOP_STRINGS
