"""The flat step and the padded-group step give the same results on a random mix of every request kind."""

from __future__ import annotations

import random

import pytest
import torch

from qwick import LLM, SamplingParams
from qwick.engine.readout import ContinuationLogprobs, ContinuationSpec, EmbeddingOutput, PoolSpec
from qwick.kernels.cpu_ops import cpu_ops_available
from qwick.model.attention import select


def _workload(seed: int) -> list[tuple[str, object]]:
    rng = random.Random(seed)
    ids = lambda n: [rng.randrange(100, 5000) for _ in range(n)]  # noqa: E731
    shared = ids(40)  # some requests share a prefix: prefix-cache hits inside the mix
    work: list[tuple[str, object]] = []
    for i in range(14):
        kind = rng.choice(["generate", "generate", "score", "pool"])
        prompt = (shared[: rng.randrange(16, 41)] if rng.random() < 0.5 else []) + ids(rng.randrange(1, 70))
        if kind == "generate":
            work.append((f"g{i}", (prompt, rng.randrange(1, 40))))
        elif kind == "score":
            conts = [ids(rng.randrange(1, 5)) for _ in range(rng.randrange(1, 5))]
            work.append((f"s{i}", ContinuationSpec(prompt, conts)))
        else:
            work.append((f"p{i}", PoolSpec(prompt)))
    return work


def _run(llm: LLM, work: list[tuple[str, object]], seed: int) -> dict[str, object]:
    """Submit the requests a few at a time between steps (they join a running batch), collect every result."""
    rng = random.Random(seed)
    pending, results = list(work), {}
    while pending or llm.engine.has_unfinished():
        for _ in range(min(len(pending), rng.randrange(0, 4))):
            request_id, item = pending.pop(0)
            if isinstance(item, tuple):
                prompt, max_tokens = item
                llm.engine.add_request(request_id, prompt, SamplingParams(max_tokens=max_tokens, temperature=0,
                                                                          ignore_eos=True))
            else:
                llm.engine.add_readout(request_id, item)
        for out in llm.engine.step():
            if out.result is not None:
                results[out.request_id] = out.result
            elif out.finished_request is not None:
                results[out.request_id] = out.finished_request.outputs[0].token_ids
    return results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flat_and_grouped_steps_agree(tiny_model_dir, monkeypatch, seed):
    if not cpu_ops_available(torch.device("cpu"), torch.float32):
        pytest.skip("the flat step needs qwick's CPU ops (AVX-512 and a C++ compiler)")
    per_token = 2 * 2 * 2 * 32 * 4  # layers * (k, v) * kv_heads * head_dim * fp32 bytes
    # 20-token steps chunk the prompts; 10 blocks of 16 make sequences take turns (preemption)
    kwargs = dict(dtype="float32", max_model_len=160, max_num_batched_tokens=20, kv_cache_memory_bytes=10 * 16 * per_token)
    work = _workload(seed)
    flat_llm = LLM(tiny_model_dir, **kwargs)
    flat = _run(flat_llm, work, seed)
    monkeypatch.setattr(select, "BACKENDS", ())  # the portable SDPA backend only
    grouped_llm = LLM(tiny_model_dir, **kwargs)
    assert flat_llm.engine.runner.backend.supports_flat_step
    assert not grouped_llm.engine.runner.backend.supports_flat_step
    grouped = _run(grouped_llm, work, seed)
    assert flat.keys() == grouped.keys() == {request_id for request_id, _ in work}
    for request_id in flat:
        a, b = flat[request_id], grouped[request_id]
        if isinstance(a, ContinuationLogprobs):
            assert isinstance(b, ContinuationLogprobs)
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        elif isinstance(a, EmbeddingOutput):
            assert isinstance(b, EmbeddingOutput)
            torch.testing.assert_close(a.embedding, b.embedding, atol=1e-5, rtol=0)
        else:
            assert a == b, request_id
    for llm in (flat_llm, grouped_llm):
        assert llm.engine.blocks.usage == 0.0
    for llm in (flat_llm, grouped_llm):  # the mix exercised preemption and prefix-cache hits on both paths
        assert llm.engine.stats().num_preemptions > 0 and llm.engine.stats().prefix_cache_hits > 0
