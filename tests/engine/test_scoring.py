"""Scoring and pooling requests: exact logprobs / hidden states, the context computed once, batched continuations."""

from __future__ import annotations

import asyncio

import pytest
import torch

from qwick import LLM, SamplingParams
from qwick.engine.async_engine import AsyncLLMEngine
from qwick.engine.readout import ContinuationSpec, PoolSpec

from reference import TOKENIZER_VOCAB

CONTEXT = [(7 * j) % 5000 + 100 for j in range(37)]  # 2 full blocks of 16 + a partial block of 5
CONTINUATIONS = [[5], [9, 10, 11], [9, 10], [300, 4, 5, 6, 7], [5]]


def _run(llm: LLM, specs: dict[str, ContinuationSpec | PoolSpec]) -> tuple[dict, int]:
    for request_id, spec in specs.items():
        llm.engine.add_readout(request_id, spec)
    results, steps = {}, 0
    while llm.engine.has_unfinished():
        steps += 1
        for out in llm.engine.step():
            if out.result is not None:
                results[out.request_id] = out.result
    return results, steps


def _hf_logprob(hf_model, context: list[int], continuation: list[int]) -> float:
    """Reference: transformers' log_softmax over the whole sequence (padding ids masked, as qwick samples)."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([context + continuation])).logits[0].float()
    logits[:, TOKENIZER_VOCAB:] = float("-inf")
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(context) - 1 + j, t].item() for j, t in enumerate(continuation))


def test_continuation_logprobs_equal_transformers(llm, hf_model):
    results, _ = _run(llm, {"s": ContinuationSpec(CONTEXT, CONTINUATIONS)})
    out = results["s"]
    for continuation, total, per_token in zip(CONTINUATIONS, out.logprobs, out.token_logprobs, strict=True):
        assert total == pytest.approx(_hf_logprob(hf_model, CONTEXT, continuation), abs=1e-4)
        assert len(per_token) == len(continuation) and sum(per_token) == pytest.approx(total)
    assert out.logprobs[0] == out.logprobs[4]  # a repeated continuation gets the same answer


def test_context_is_computed_once_and_continuations_run_in_one_batched_step(tiny_model_dir, hf_model, step_path):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    flat = step_path == "flat"
    forwards = []
    original = llm.model.forward
    llm.model.forward = lambda *a, **k: forwards.append(1) or original(*a, **k)
    before = llm.engine.stats().prompt_tokens
    results, steps = _run(llm, {"s": ContinuationSpec(CONTEXT, CONTINUATIONS)})
    computed = llm.engine.stats().prompt_tokens - before
    # the context (37) once; one fork per distinct longer continuation, computing only its own tokens but the
    # last (the context's KV is shared, its partial last block copied)
    assert computed == 37 + 2 + 1 + 4
    # flat: the forks join the context's forward; else they run together in a second step
    assert (steps, len(forwards)) == ((1, 1) if flat else (2, 2))
    for continuation, total in zip(CONTINUATIONS, results["s"].logprobs, strict=True):
        assert total == pytest.approx(_hf_logprob(hf_model, CONTEXT, continuation), abs=1e-4)
    assert llm.engine.blocks.usage == 0.0  # forks gave back every block they shared or copied


@pytest.mark.parametrize("budget", [35, 20, 33])
def test_forks_joining_a_chunked_context_see_its_whole_partial_block(tiny_model_dir, hf_model, budget, step_path):
    # the context's last chunk starts inside its partial block (35: positions 32-34 were computed a step
    # earlier and are copied, 35-36 are mirrored into each fork's copy), or in an earlier block (20), or at
    # the partial block's start (33)
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256, max_num_batched_tokens=budget,
              enable_prefix_caching=False)
    results, _ = _run(llm, {"s": ContinuationSpec(CONTEXT, CONTINUATIONS)})
    for continuation, total in zip(CONTINUATIONS, results["s"].logprobs, strict=True):
        assert total == pytest.approx(_hf_logprob(hf_model, CONTEXT, continuation), abs=1e-4)
    assert llm.engine.blocks.usage == 0.0


def test_scoring_forks_share_steps_with_decodes_and_stay_exact(tiny_model_dir, hf_model, step_path):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    greedy = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    alone = llm.generate([{"prompt_token_ids": CONTEXT[:20]}], greedy)[0].outputs[0].token_ids
    llm.engine.add_request("g", CONTEXT[:20], greedy)
    llm.engine.step()  # "g" decodes from here on, beside the scoring requests' contexts and forks
    contexts = {"a": CONTEXT, "b": CONTEXT[:30], "c": CONTEXT[:16]}  # partial last blocks of 5, 14 and none
    for key, context in contexts.items():
        llm.engine.add_readout(key, ContinuationSpec(context, CONTINUATIONS))
    results, generated = {}, None
    while llm.engine.has_unfinished():
        for out in llm.engine.step():
            if out.result is not None:
                results[out.request_id] = out.result
            if out.finished_request is not None:
                generated = out.finished_request.outputs[0].token_ids
    for key, context in contexts.items():
        for continuation, total in zip(CONTINUATIONS, results[key].logprobs, strict=True):
            assert total == pytest.approx(_hf_logprob(hf_model, context, continuation), abs=1e-4)
    assert generated == alone
    assert llm.engine.blocks.usage == 0.0


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_forks_without_free_blocks_or_prefix_caching_stay_exact(tiny_model_dir, hf_model, prefix_caching, step_path):
    per_block = 2 * 2 * 2 * 32 * 4 * 16  # layers * (k, v) * kv_heads * head_dim * fp32 bytes * block_size
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=64, kv_cache_memory_bytes=4 * per_block,
              enable_prefix_caching=prefix_caching)
    conts = [[9, 10, 11], [300, 4, 5, 6, 7], [12, 13]]
    results, _ = _run(llm, {"s": ContinuationSpec(CONTEXT, conts)})  # 3 blocks each: forks queue and take turns
    for continuation, total in zip(conts, results["s"].logprobs, strict=True):
        assert total == pytest.approx(_hf_logprob(hf_model, CONTEXT, continuation), abs=1e-4)
    assert llm.engine.blocks.usage == 0.0


def test_logits_are_computed_only_where_a_continuation_is_read(tiny_model_dir, monkeypatch):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    rows = []
    original = llm.model.compute_logits
    monkeypatch.setattr(llm.model, "compute_logits", lambda h, out=None: rows.append(h.shape[0]) or original(h, out))
    _run(llm, {"s": ContinuationSpec(CONTEXT, CONTINUATIONS)})
    assert sum(rows) == 1 + 2 + 1 + 4  # the context's last position, then each later continuation token


def test_single_token_labels_need_one_step(tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    _, steps = _run(llm, {"s": ContinuationSpec(CONTEXT, [[1], [2], [3]])})
    assert steps == 1


def test_fully_cached_continuations_are_still_computed(tiny_model_dir, hf_model):
    """A second identical request finds every block of its continuation sequences cached; the positions
    whose logits are read must be computed anyway (BlockManager reuse_limit)."""
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    long_cont = [[11 + j for j in range(40)]]
    first, _ = _run(llm, {"a": ContinuationSpec(CONTEXT, long_cont)})
    second, _ = _run(llm, {"b": ContinuationSpec(CONTEXT, long_cont)})
    assert second["b"].logprobs == pytest.approx(first["a"].logprobs, abs=1e-5)
    assert first["a"].logprobs[0] == pytest.approx(_hf_logprob(hf_model, CONTEXT, long_cont[0]), abs=1e-3)


def test_chunked_prefill_and_concurrent_generation_keep_results_exact(tiny_model_dir, hf_model):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256, max_num_batched_tokens=24)
    greedy = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    alone = llm.generate([{"prompt_token_ids": CONTEXT}], greedy)[0].outputs[0].token_ids
    llm.engine.add_request("g", CONTEXT, greedy)
    results, _ = _run(llm, {"s": ContinuationSpec(CONTEXT[:30], CONTINUATIONS), "p": PoolSpec(CONTEXT)})
    for continuation, total in zip(CONTINUATIONS, results["s"].logprobs, strict=True):
        assert total == pytest.approx(_hf_logprob(hf_model, CONTEXT[:30], continuation), abs=1e-4)
    with torch.no_grad():
        reference = hf_model.model(torch.tensor([CONTEXT])).last_hidden_state[0, -1]
    torch.testing.assert_close(results["p"].embedding, reference, atol=1e-5, rtol=0)
    assert llm.generate([{"prompt_token_ids": CONTEXT}], greedy)[0].outputs[0].token_ids == alone


def test_pooling_returns_the_final_normed_hidden_state(llm, hf_model):
    results, steps = _run(llm, {"p": PoolSpec(CONTEXT)})
    with torch.no_grad():
        reference = hf_model.model(torch.tensor([CONTEXT])).last_hidden_state[0, -1]
    torch.testing.assert_close(results["p"].embedding, reference, atol=1e-5, rtol=0)
    assert results["p"].num_prompt_tokens == len(CONTEXT) and steps == 1


def test_abort_frees_every_block(tiny_model_dir, step_path):
    # flat: abort between the context's two chunks; padded groups: after the context, with the forks queued
    flat = step_path == "flat"
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256, max_num_batched_tokens=24 if flat else 256)
    llm.engine.add_readout("s", ContinuationSpec(CONTEXT, CONTINUATIONS))
    llm.engine.step()
    assert llm.engine.has_unfinished()
    out = llm.engine.abort("s")
    assert out is not None and out.finished_request is None and out.result is None
    assert not llm.engine.has_unfinished() and llm.engine.blocks.usage == 0.0


@pytest.mark.parametrize(("spec", "message"), [
    (ContinuationSpec([], [[1]]), "context\\) is empty"),
    (ContinuationSpec([1, 2], [[]]), "continuation is empty"),
    (ContinuationSpec([1, 2], [[TOKENIZER_VOCAB]]), "continuation token ids must be in"),
    (ContinuationSpec([1, 2], [[1] * 300]), "exceeds max_model_len 256"),
    (PoolSpec([-1]), "out of range"),
])
def test_invalid_task_requests_are_refused(llm, spec, message):
    with pytest.raises(ValueError, match=message):
        llm.engine.add_readout("bad", spec)
    assert "bad" not in llm.engine.jobs


def test_request_ids_are_shared_with_generation(llm):
    llm.engine.add_readout("same", PoolSpec([1, 2, 3]))
    with pytest.raises(ValueError, match="already in use"):
        llm.engine.add_request("same", [1, 2], SamplingParams())
    llm.engine.abort("same")


def test_async_engine_scores_embeds_and_aborts_on_cancel(tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256)
    reference, _ = _run(llm, {"s": ContinuationSpec(CONTEXT, CONTINUATIONS)})
    engine = AsyncLLMEngine(llm.engine)

    async def main() -> None:
        score, embedding = await asyncio.gather(engine.continuation_logprobs(CONTEXT, CONTINUATIONS, "a"), engine.embed(CONTEXT, "b"))
        assert score.logprobs == pytest.approx(reference["s"].logprobs, abs=1e-5)
        assert embedding.embedding.shape == (llm.model.config.hidden_size,)
        with pytest.raises(ValueError, match="continuation is empty"):
            await engine.continuation_logprobs(CONTEXT, [[]], "c")
        task = asyncio.ensure_future(engine.continuation_logprobs(CONTEXT * 6, CONTINUATIONS, "d"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await engine.shutdown()

    asyncio.run(main())
    assert not llm.engine.has_unfinished() and llm.engine.blocks.usage == 0.0
