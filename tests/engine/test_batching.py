"""The batched engine: continuous batching, paged KV with preemption, prefix caching, chunked prefill."""

from __future__ import annotations

import pytest

from qwick import LLM, SamplingParams

pytestmark = pytest.mark.usefixtures("step_path")  # every test on both engine step paths

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
PROMPTS = [[(7 * i + j) % 5000 + 100 for j in range(n)] for i, n in enumerate([3, 40, 17, 90, 1, 55, 28, 64])]


def _tokens(llm: LLM, prompts: list[list[int]], params: SamplingParams = GREEDY) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in prompts], params)]


@pytest.fixture(scope="module")
def alone(tiny_model_dir) -> list[list[int]]:
    """Each prompt generated on its own, with no cache sharing: the reference."""
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256, enable_prefix_caching=False)
    return [_tokens(llm, [p])[0] for p in PROMPTS]


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_batched_greedy_equals_one_at_a_time(tiny_model_dir, alone, prefix_caching):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256, enable_prefix_caching=prefix_caching)
    assert _tokens(llm, PROMPTS) == alone


def test_tiny_kv_budget_preempts_and_still_gives_the_same_tokens(tiny_model_dir):
    # 16 blocks of 16 tokens hold 256 tokens; 8 sequences growing to ~600 tokens must take turns
    per_token = 2 * 2 * 2 * 32 * 4  # layers * (k, v) * kv_heads * head_dim * fp32 bytes
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    reference = LLM(tiny_model_dir, dtype="float32", max_model_len=256, enable_prefix_caching=False)
    alone = [_tokens(reference, [p], params)[0] for p in PROMPTS]
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256, kv_cache_memory_bytes=256 * per_token)
    assert llm.engine.blocks.num_blocks == 16
    assert _tokens(llm, PROMPTS, params) == alone
    assert llm.engine.stats().num_preemptions > 0


def test_mixed_sampling_params_in_one_batch_keep_their_own_settings(tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    params = [SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=9, temperature=0.9, top_p=0.8, seed=3, ignore_eos=True),
              SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)]
    batched = [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in PROMPTS[:3]], params)]
    alone = [_tokens(llm, [p], sp)[0] for p, sp in zip(PROMPTS[:3], params, strict=True)]
    assert batched == alone
    assert [len(t) for t in batched] == [5, 9, 2]


def test_shared_prefix_is_computed_once(tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=1024)
    prefix = [(13 * j) % 7000 + 50 for j in range(512)]
    first, second = [*prefix, 11, 12, 13], [*prefix, 21, 22, 23, 24, 25]
    _tokens(llm, [first])
    before = llm.engine.stats().prompt_tokens
    cached = _tokens(llm, [second])
    assert llm.engine.stats().prompt_tokens - before == 5  # only the new tokens were prefilled
    assert llm.engine.stats().prefix_cache_hits >= 512
    plain = LLM(tiny_model_dir, dtype="float32", max_model_len=1024, enable_prefix_caching=False)
    assert cached == _tokens(plain, [second])


def test_a_shared_prefix_ending_mid_block_is_reused_to_the_token(tiny_model_dir):
    # a gate's instruction rarely ends on a block boundary: its computed tail (the partial block) is copied
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=1024)
    prefix = [(13 * j) % 7000 + 50 for j in range(200)]  # 12 full blocks + 8 tokens
    _tokens(llm, [prefix])
    before = llm.engine.stats().prompt_tokens
    second = [*prefix, 21, 22, 23, 24, 25]
    cached = _tokens(llm, [second])
    assert llm.engine.stats().prompt_tokens - before == 5  # not 13: the prefix's 8 tail tokens were copied
    plain = LLM(tiny_model_dir, dtype="float32", max_model_len=1024, enable_prefix_caching=False)
    assert cached == _tokens(plain, [second])
    batch = [[*prefix[:195], 30 + i, 31, 32] for i in range(4)]  # share 3 of the 8 tail tokens, in one batch
    assert _tokens(llm, batch) == _tokens(plain, batch)


def test_fully_cached_prompt_still_computes_its_last_token(tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    prompt = list(range(100, 164))  # exactly 4 blocks
    first = _tokens(llm, [prompt])
    before = llm.engine.stats().prompt_tokens
    assert _tokens(llm, [prompt]) == first
    assert 1 <= llm.engine.stats().prompt_tokens - before <= 16


def test_long_prompt_is_chunked_and_decodes_keep_going(tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=512, max_num_batched_tokens=32)
    engine = llm.engine
    engine.add_request("short", PROMPTS[0], GREEDY.resolved(llm.generation_defaults))
    engine.step()  # "short" is prefilled and decoding
    engine.add_request("long", list(range(200, 500)), GREEDY)
    progressed = []
    while engine.has_unfinished() and len(progressed) < 5:
        outs = {o.request_id for o in engine.step()}
        progressed.append("short" in outs)
    assert all(progressed)  # every step decoded "short" while "long" (300 tokens) was still prefilling
    while engine.has_unfinished():
        engine.step()
    chunked = _tokens(llm, [list(range(200, 500))])
    plain = LLM(tiny_model_dir, dtype="float32", max_model_len=512, max_num_batched_tokens=1024)
    assert chunked == _tokens(plain, [list(range(200, 500))])


def test_abort_frees_every_block(tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256, enable_prefix_caching=False)
    engine = llm.engine
    engine.add_request("a", PROMPTS[3], SamplingParams(max_tokens=50, ignore_eos=True))
    engine.add_request("b", PROMPTS[5], SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    engine.step()
    assert engine.stats().kv_cache_usage > 0
    engine.abort("a")
    engine.abort("b")
    assert not engine.has_unfinished()
    assert engine.stats().kv_cache_usage == 0
    assert engine.blocks.num_free_blocks == engine.blocks.num_blocks
    assert engine.stats().requests_finished["abort"] == 2


def test_kv_budget_too_small_for_one_sequence_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ValueError, match="less than one sequence of max_model_len=256"):
        LLM(tiny_model_dir, dtype="float32", max_model_len=256, kv_cache_memory_bytes=1024)


def test_stats_report_the_engine_state(tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    llm.generate([{"prompt_token_ids": p} for p in PROMPTS[:3]], GREEDY)
    stats = llm.engine.stats()
    assert stats.generation_tokens == 3 * 12
    assert stats.prompt_tokens == sum(len(p) for p in PROMPTS[:3])
    assert (stats.num_running, stats.num_waiting, stats.kv_cache_usage) == (0, 0, 0.0)
    assert len(stats.ttft_seconds) == 3 and len(stats.itl_seconds) == 3 * 11
    assert stats.requests_finished == {"length": 3}


def test_duplicate_request_id_is_rejected(tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    llm.engine.add_request("x", [1, 2, 3], GREEDY)
    with pytest.raises(ValueError, match="already in use"):
        llm.engine.add_request("x", [1, 2, 3], GREEDY)


def test_default_context_length_shrinks_to_the_kv_budget(tiny_model_dir):
    per_token = 2 * 2 * 2 * 32 * 4  # layers * (k, v) * kv_heads * head_dim * fp32 bytes
    llm = LLM(tiny_model_dir, dtype="float32", kv_cache_memory_bytes=100 * 16 * per_token)
    assert llm.max_model_len == 1600  # the checkpoint allows 2048
