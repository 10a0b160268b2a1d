"""LLM.generate: greedy parity, batching, seeds, n, logprobs and the stop rules."""

from __future__ import annotations

import pytest
import torch

from qwick import SamplingParams

from reference import hf_greedy

GREEDY = dict(temperature=0.0, ignore_eos=True)


def test_greedy_tokens_equal_transformers(llm, hf_model):
    prompt = llm.get_tokenizer().encode("The quick brown fox jumps over the lazy dog")
    out = llm.generate({"prompt_token_ids": prompt}, SamplingParams(max_tokens=32, **GREEDY))[0]
    assert out.outputs[0].token_ids == hf_greedy(hf_model, prompt, 32)
    assert out.prompt_token_ids == prompt


def test_text_is_the_decoded_tokens(llm):
    out = llm.generate("Bonjour", SamplingParams(max_tokens=20, **GREEDY))[0].outputs[0]
    assert out.text == llm.get_tokenizer().decode(out.token_ids, skip_special_tokens=True)
    assert out.finish_reason == "length"


def test_batched_mixed_requests_equal_one_at_a_time(llm):
    prompts = ["a", "The weather in Paris is", "1 2 3 4 5 6 7 8 9 10 11 12", "你好"]
    params = [
        SamplingParams(max_tokens=9, **GREEDY),
        SamplingParams(max_tokens=4, temperature=0.8, top_p=0.9, seed=11),
        SamplingParams(max_tokens=12, temperature=1.0, top_k=5, seed=3, stop=["zzz"]),
        SamplingParams(max_tokens=6, **GREEDY),
    ]
    batched = llm.generate(prompts, params)
    alone = [llm.generate(p, sp)[0] for p, sp in zip(prompts, params, strict=True)]
    assert [o.outputs[0].token_ids for o in batched] == [o.outputs[0].token_ids for o in alone]
    assert [len(o.outputs[0].token_ids) for o in batched] == [9, 4, 12, 6]


def test_same_seed_same_output_different_seed_different_output(llm):
    def run(seed):
        params = SamplingParams(max_tokens=16, temperature=1.0, top_p=1.0, top_k=0, seed=seed, ignore_eos=True)
        return llm.generate("Tell me a story", params)[0].outputs[0].token_ids

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_n_returns_independent_samples(llm):
    out = llm.generate("Hello", SamplingParams(n=3, max_tokens=8, temperature=1.0, seed=1, ignore_eos=True))[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) == 3


def test_logprobs_hold_the_sampled_token_and_top_k(llm, hf_model):
    prompt = llm.get_tokenizer().encode("Hello world")
    out = llm.generate({"prompt_token_ids": prompt}, SamplingParams(max_tokens=3, logprobs=4, **GREEDY))[0]
    first = out.outputs[0].logprobs[0]
    token = out.outputs[0].token_ids[0]
    with torch.no_grad():
        ref = torch.log_softmax(hf_model(torch.tensor([prompt])).logits[0, -1, :151669].float(), -1)
    assert token in first and first[token].rank == 1
    assert len(first) == 4
    assert first[token].logprob == pytest.approx(float(ref[token]), abs=1e-4)
    assert out.outputs[0].cumulative_logprob == pytest.approx(
        sum(step[t].logprob for step, t in zip(out.outputs[0].logprobs, out.outputs[0].token_ids, strict=True)))


def test_stop_string_across_tokens_is_excluded_from_text(llm):
    base = llm.generate("Once upon a time", SamplingParams(max_tokens=20, **GREEDY))[0].outputs[0]
    tok = llm.get_tokenizer()
    pieces = [tok.decode([t]) for t in base.token_ids]
    # a stop string made of the end of token 3 and the start of token 4
    stop = pieces[3][-1:] + pieces[4][:1]
    assert len(stop) == 2
    out = llm.generate("Once upon a time", SamplingParams(max_tokens=20, stop=[stop], **GREEDY))[0].outputs[0]
    cut = base.text.find(stop)
    assert out.text == base.text[:cut]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop)


def test_include_stop_str_in_output_keeps_it(llm):
    base = llm.generate("Once upon a time", SamplingParams(max_tokens=20, **GREEDY))[0].outputs[0]
    stop = base.text[5:8]
    out = llm.generate("Once upon a time", SamplingParams(max_tokens=20, stop=stop, include_stop_str_in_output=True,
                                                          **GREEDY))[0].outputs[0]
    assert out.text == base.text[: base.text.find(stop) + len(stop)]


def test_stop_token_ids_end_generation_and_are_not_in_the_text(llm):
    base = llm.generate("Once upon a time", SamplingParams(max_tokens=10, **GREEDY))[0].outputs[0]
    stop_id = base.token_ids[3]
    first = base.token_ids.index(stop_id)
    out = llm.generate("Once upon a time", SamplingParams(max_tokens=10, stop_token_ids=[stop_id], **GREEDY))[0]
    completion = out.outputs[0]
    assert completion.token_ids == base.token_ids[: first + 1]
    assert completion.text == llm.get_tokenizer().decode(base.token_ids[:first], skip_special_tokens=True)
    assert (completion.finish_reason, completion.stop_reason) == ("stop", stop_id)


def test_min_tokens_suppresses_stop_tokens(llm):
    base = llm.generate("Once upon a time", SamplingParams(max_tokens=10, **GREEDY))[0].outputs[0]
    stop_id = base.token_ids[0]
    out = llm.generate("Once upon a time", SamplingParams(max_tokens=10, min_tokens=4, stop_token_ids=[stop_id],
                                                          **GREEDY))[0].outputs[0]
    assert len(out.token_ids) >= 4
    assert stop_id not in out.token_ids[:4]


def test_eos_from_generation_config_stops_with_reason_stop(llm):
    params = SamplingParams(max_tokens=10, stop_token_ids=None, temperature=0.0)
    eos_ids = set(llm.generation_defaults.eos_token_ids)
    assert eos_ids == {151645, 151643}
    out = llm.generate("x", params)[0].outputs[0]
    assert out.finish_reason in ("stop", "length")
    if out.finish_reason == "stop":
        assert out.token_ids[-1] in eos_ids


def test_presence_penalty_changes_a_repetitive_greedy_output(llm):
    plain = llm.generate("a a a a", SamplingParams(max_tokens=16, **GREEDY))[0].outputs[0].token_ids
    penalised = llm.generate("a a a a", SamplingParams(max_tokens=16, presence_penalty=2.0,
                                                        **GREEDY))[0].outputs[0].token_ids
    assert len(set(penalised)) >= len(set(plain))
    assert penalised != plain or len(set(plain)) == len(plain)


def test_prompt_longer_than_max_model_len_is_rejected(llm):
    with pytest.raises(ValueError, match=r"prompt has 300 tokens but max_model_len is 256"):
        llm.generate({"prompt_token_ids": [5] * 300})


def test_generation_stops_at_max_model_len(llm):
    out = llm.generate({"prompt_token_ids": [5] * 250}, SamplingParams(max_tokens=50, **GREEDY))[0].outputs[0]
    assert len(out.token_ids) == 6 and out.finish_reason == "length"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"prompt_token_ids": []}, "empty"),
        ({"prompt_token_ids": [1, 10**7]}, "out of range"),
        ({"prompt_token_ids": "abc"}, "list of integers"),
        (42, "a prompt must be"),
    ],
)
def test_bad_prompts_raise_clear_errors(llm, prompt, message):
    with pytest.raises(ValueError, match=message):
        llm.generate([prompt])


def test_sampling_params_count_must_match_prompts(llm):
    with pytest.raises(ValueError, match="2 SamplingParams for 3 prompts"):
        llm.generate(["a", "b", "c"], [SamplingParams(), SamplingParams()])


def test_engine_is_empty_after_errors_and_runs(llm):
    with pytest.raises(ValueError):
        llm.generate({"prompt_token_ids": [5] * 300})
    assert not llm.engine.has_unfinished()
    assert llm.generate("ok", SamplingParams(max_tokens=2, **GREEDY))[0].outputs[0].finish_reason == "length"


def test_a_bad_prompt_in_a_list_leaves_nothing_queued(llm):
    with pytest.raises(ValueError):
        llm.generate(["fine", {"prompt_token_ids": [5] * 300}])
    assert not llm.engine.has_unfinished()
