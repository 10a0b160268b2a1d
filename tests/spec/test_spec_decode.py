"""Speculative decoding by prompt lookup: the same tokens as one forward per token (greedy), the same
distribution when sampling, whatever else runs (batching, preemption, prefix caching, grammars, LoRA)."""

from __future__ import annotations

import pytest
import torch
from copy_model import SPAN, copy_prompt
from speckit import NGRAM, no_speculation

from qwick import LLM, SamplingParams, StructuredOutputsParams

# repetitive prompts give the random tiny model's outputs n-gram matches to draft from
PROMPTS = ["the cat sat on the mat and the cat sat on the mat and the cat",
           "one two three four one two three four one two",
           "a b c a b c a b c a b",
           "hello world"]
GREEDY = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)


def _tokens(llm: LLM, prompts, params, **kw) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params, **kw)]


def _both(llm: LLM, prompts, params, **kw) -> tuple[list[list[int]], list[list[int]], int]:
    """(plain tokens, speculative tokens, draft tokens accepted in the speculative run)."""
    with no_speculation(llm):
        plain = _tokens(llm, prompts, params, **kw)
    before = llm.engine.stats().spec_decode_num_accepted_tokens
    spec = _tokens(llm, prompts, params, **kw)
    return plain, spec, llm.engine.stats().spec_decode_num_accepted_tokens - before


def test_greedy_identical_in_a_batch(spec_llm):
    plain, spec, accepted = _both(spec_llm, PROMPTS, GREEDY)
    assert spec == plain and accepted > 0
    assert spec_llm.engine.blocks.num_free_blocks == spec_llm.engine.blocks.num_blocks  # every block came back


def test_greedy_identical_under_preemption(spec_llm):
    prompts = [p * 3 for p in PROMPTS] * 2  # 8 x (~30 prompt + 32 output) tokens: more than the KV budget
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    before = spec_llm.engine.stats().num_preemptions
    plain, spec, accepted = _both(spec_llm, prompts, params)
    assert spec_llm.engine.stats().num_preemptions > before
    assert spec == plain and accepted > 0


def test_greedy_identical_with_prefix_cache_hits(spec_llm):
    first = _tokens(spec_llm, PROMPTS[:1], GREEDY)
    # a prompt that continues the speculated output reuses its committed blocks (prompt and output tokens alike)
    prompt = {"prompt_token_ids": spec_llm.get_tokenizer().encode(PROMPTS[0]) + first[0]}
    hits = spec_llm.engine.stats().prefix_cache_hits
    spec = _tokens(spec_llm, [prompt], GREEDY)
    assert spec_llm.engine.stats().prefix_cache_hits - hits >= 32  # two full blocks at least
    with no_speculation(spec_llm):
        spec_llm.engine.blocks.reset_prefix_cache()
        assert spec == _tokens(spec_llm, [prompt], GREEDY)


def test_greedy_identical_with_lora(spec_llm, adapter):
    plain, spec, accepted = _both(spec_llm, PROMPTS, GREEDY, lora_request=adapter)
    assert spec == plain and accepted > 0
    base = _tokens(spec_llm, PROMPTS, GREEDY)
    assert base != spec  # the adapter changed the outputs: it was applied to the drafted chunks too


@pytest.mark.parametrize("structure", [
    StructuredOutputsParams(regex=r"(ab|cd)(ab|cd)(ab|cd)[a-z ]{0,30}"),
    StructuredOutputsParams(json={"type": "object", "properties": {"a": {"type": "string", "maxLength": 20}},
                                  "required": ["a"]}),
])
def test_greedy_identical_with_structured_output(spec_llm, structure):
    params = SamplingParams(temperature=0, max_tokens=32, structured_outputs=structure)
    plain, spec, _ = _both(spec_llm, PROMPTS[1:3], params)
    assert spec == plain


def test_stops_and_max_tokens_are_never_passed(spec_llm):
    text = spec_llm.generate(PROMPTS[0], GREEDY)[0].outputs[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    for params in (SamplingParams(temperature=0, max_tokens=7, ignore_eos=True),
                   SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, stop=[stop])):
        plain, spec, _ = _both(spec_llm, PROMPTS[:1], params)
        assert spec == plain
        out = spec_llm.generate(PROMPTS[0], params)[0].outputs[0]
        assert len(out.token_ids) <= 7 or (out.finish_reason == "stop" and stop not in out.text)


def test_logprobs_of_every_emitted_token(spec_llm):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=2)
    with no_speculation(spec_llm):
        plain = spec_llm.generate(PROMPTS[2], params)[0].outputs[0]
    spec = spec_llm.generate(PROMPTS[2], params)[0].outputs[0]
    assert spec.token_ids == plain.token_ids and len(spec.logprobs) == len(spec.token_ids)
    for a, b in zip(spec.logprobs, plain.logprobs, strict=True):
        assert a.keys() == b.keys()
        assert all(abs(a[t].logprob - b[t].logprob) < 1e-4 for t in a)


def test_copy_model_accepts_most_drafts_in_fewer_forwards(copy_llm):
    prompts = [{"prompt_token_ids": copy_prompt(seed)} for seed in range(3)]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    with no_speculation(copy_llm):
        before = copy_llm.engine.stats().forward_passes
        plain = _tokens(copy_llm, prompts, params)
        plain_forwards = copy_llm.engine.stats().forward_passes - before
    stats = copy_llm.engine.stats()
    spec = _tokens(copy_llm, prompts, params)
    after = copy_llm.engine.stats()
    assert spec == plain
    drafted = after.spec_decode_num_draft_tokens - stats.spec_decode_num_draft_tokens
    accepted = after.spec_decode_num_accepted_tokens - stats.spec_decode_num_accepted_tokens
    assert drafted > 0 and accepted / drafted > 0.5
    assert after.forward_passes - stats.forward_passes < 0.7 * plain_forwards
    assert 0 < after.spec_decode_acceptance_rate <= 1


def _chi_square_p(a: list[int], b: list[int]) -> float:
    """Two-sample chi-square test of homogeneity over the tokens seen (rare ones pooled): its p-value."""
    counts: dict[int, list[int]] = {}
    for i, sample in enumerate((a, b)):
        for token in sample:
            counts.setdefault(token, [0, 0])[i] += 1
    bins = [c for c in counts.values() if sum(c) >= 10]
    rest = [sum(c[i] for c in counts.values() if sum(c) < 10) for i in (0, 1)]
    if sum(rest):
        bins.append(rest)
    table = torch.tensor(bins, dtype=torch.float64)  # [bins, 2]
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    dof = len(bins) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


@pytest.mark.parametrize("sampling", [dict(temperature=1.0, top_k=0, top_p=1.0),
                                      dict(temperature=0.8, top_k=5, presence_penalty=1.0)])
def test_sampled_tokens_keep_the_model_distribution(copy_llm, sampling):
    """Tokens 2-4 are decided by verification (the first comes from the prompt's forward): at temperature >
    0 their distribution must be the model's, whatever the drafts were."""
    prompt = {"prompt_token_ids": copy_prompt(7)}
    n = 300

    def positions(seed0: int) -> list[list[int]]:
        params = [SamplingParams(max_tokens=4, ignore_eos=True, seed=seed0 + s, **sampling) for s in range(n)]
        outs = _tokens(copy_llm, [prompt] * n, params)
        return [[o[j] for o in outs] for j in range(1, 4)]

    with no_speculation(copy_llm):
        plain = positions(0)
    before = copy_llm.engine.stats()
    spec = positions(10_000)
    after = copy_llm.engine.stats()
    accepted = after.spec_decode_num_accepted_tokens - before.spec_decode_num_accepted_tokens
    drafted = after.spec_decode_num_draft_tokens - before.spec_decode_num_draft_tokens
    assert 0 < accepted < drafted  # both branches of the rejection rule ran
    for j in range(3):
        assert _chi_square_p(plain[j], spec[j]) > 1e-3, j


def test_grouped_step_path_greedy_identical(monkeypatch, tiny_model_dir):
    """CUDA, compiled decode and CPUs without AVX-512 run prefill chunks in padded groups: drafts too."""
    monkeypatch.setattr("qwick.model.attention.select.BACKENDS", ())
    llm = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=256, speculative_config=NGRAM)
    assert not llm.engine.runner.backend.supports_flat_step
    plain, spec, accepted = _both(llm, PROMPTS, GREEDY)
    assert spec == plain and accepted > 0


def test_copy_prompt_shape():
    assert len(copy_prompt(0)) == SPAN + 4
