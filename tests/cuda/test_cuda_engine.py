"""On the device: the batched engine's guarantees (tests/engine, tests/gates) with CUDA's attention path.

Every reference is computed one request at a time, or by transformers on the CPU in float32.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
import transformers

from qwick import LLM, SamplingParams, StructuredOutputsParams
from qwick.engine.readout import ContinuationSpec
from qwick.llm import start_async_engine

from reference import hf_label_probs

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
PROMPTS = [[(7 * i + j) % 5000 + 100 for j in range(n)] for i, n in enumerate([3, 40, 17, 90, 1, 55, 28, 64])]
PER_TOKEN_FP32 = 2 * 2 * 2 * 32 * 4  # the tiny model: layers * (k, v) * kv_heads * head_dim * fp32 bytes


def tokens(llm: LLM, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] = GREEDY) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in prompts], params)]


def engine(model_dir, device: str, **kwargs) -> LLM:
    return LLM(model_dir, dtype="float32", device=device, max_model_len=256, **kwargs)


@pytest.fixture(scope="module")
def alone(tiny_model_dir, device) -> list[list[int]]:
    llm = engine(tiny_model_dir, device, enable_prefix_caching=False)
    return [tokens(llm, [p])[0] for p in PROMPTS]


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_batched_greedy_equals_one_at_a_time(tiny_model_dir, device, alone, prefix_caching):
    assert tokens(engine(tiny_model_dir, device, enable_prefix_caching=prefix_caching), PROMPTS) == alone


def test_preemption_under_a_tiny_kv_budget_keeps_the_tokens(tiny_model_dir, device):
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    reference = engine(tiny_model_dir, device, enable_prefix_caching=False)
    want = [tokens(reference, [p], params)[0] for p in PROMPTS]
    llm = engine(tiny_model_dir, device, kv_cache_memory_bytes=256 * PER_TOKEN_FP32)  # 16 blocks of 16
    assert llm.engine.blocks.num_blocks == 16
    assert tokens(llm, PROMPTS, params) == want
    assert llm.engine.stats().num_preemptions > 0


def test_shared_prefix_is_computed_once_and_chunked_prefill_matches(tiny_model_dir, device):
    llm = LLM(tiny_model_dir, dtype="float32", device=device, max_model_len=1024, max_num_batched_tokens=64)
    prefix = [(13 * j) % 7000 + 50 for j in range(512)]
    tokens(llm, [[*prefix, 11, 12, 13]])
    before = llm.engine.stats().prompt_tokens
    cached = tokens(llm, [[*prefix, 21, 22, 23, 24, 25]])
    assert llm.engine.stats().prompt_tokens - before == 5
    plain = LLM(tiny_model_dir, dtype="float32", device=device, max_model_len=1024, enable_prefix_caching=False)
    assert cached == tokens(plain, [[*prefix, 21, 22, 23, 24, 25]])  # one 517-token chunk vs 64-token chunks


def test_abort_frees_every_block(tiny_model_dir, device):
    llm = engine(tiny_model_dir, device, enable_prefix_caching=False)
    for name, prompt in (("a", PROMPTS[3]), ("b", PROMPTS[5])):
        llm.engine.add_request(name, prompt, SamplingParams(max_tokens=50, ignore_eos=True))
    llm.engine.step()
    llm.engine.step()
    assert llm.engine.stats().kv_cache_usage > 0
    llm.engine.abort("a")
    llm.engine.abort("b")
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks


def test_seeded_sampling_is_batch_invariant_and_logprobs_match_the_cpu(tiny_model_dir, device):
    llm = engine(tiny_model_dir, device)
    params = [SamplingParams(max_tokens=10, temperature=0.9, top_p=0.8, top_k=50, seed=i, ignore_eos=True,
                             presence_penalty=0.5, repetition_penalty=1.1, min_p=0.02) for i in range(4)]
    batched = tokens(llm, PROMPTS[:4], params)
    assert batched == [tokens(llm, [p], sp)[0] for p, sp in zip(PROMPTS[:4], params, strict=True)]
    logprob_params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=3)
    on_device = llm.generate({"prompt_token_ids": PROMPTS[1]}, logprob_params)[0].outputs[0]
    on_cpu = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=256).generate(
        {"prompt_token_ids": PROMPTS[1]}, logprob_params)[0].outputs[0]
    assert on_device.token_ids == on_cpu.token_ids
    for got, want in zip(on_device.logprobs, on_cpu.logprobs, strict=True):
        assert set(got) == set(want)
        for token_id, entry in want.items():
            assert got[token_id].logprob == pytest.approx(entry.logprob, abs=1e-4)


def test_structured_output_validates_on_the_device(tiny_model_dir, device):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    llm = engine(tiny_model_dir, device)
    params = [SamplingParams(max_tokens=64, temperature=1.0, seed=s, structured_outputs=StructuredOutputsParams(
        json=schema)) for s in range(4)]
    for out in llm.generate(["Describe a person as JSON:"] * 4, params):
        value = json.loads(out.outputs[0].text)
        assert set(value) == {"name", "age"} and isinstance(value["name"], str) and len(value["name"]) <= 8
        assert isinstance(value["age"], int) and 0 <= value["age"] <= 120


def test_label_probabilities_and_embeddings_match_the_references(tiny_model_dir, device):
    llm = LLM(tiny_model_dir, dtype="float32", device=device, max_model_len=1024)
    hf_model = transformers.Qwen3ForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    labels, text = ["question", "purchase", "support", "complaint", "violence"], "Where can I buy a charger?"
    decision = llm.classify(text, labels)
    system = llm.tasks.service.gates["classify"].system_prompt(tuple(labels))
    assert decision.scores == pytest.approx(hf_label_probs(hf_model, hf_tokenizer, system, text, labels), abs=1e-4)
    texts = ["The capital of China is Beijing.", "Gravity attracts bodies."]
    cpu = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=1024)
    torch.testing.assert_close(torch.tensor(llm.embed(texts)), torch.tensor(cpu.embed(texts)), atol=1e-4, rtol=0)


def prompt_logprobs(llm: LLM, ids: list[int]) -> torch.Tensor:
    """Logprobs of ids[1:] after ids[0] through the scoring path: every position reads the cache."""
    llm.engine.add_readout("s", ContinuationSpec(ids[:1], [ids[1:]]))
    while llm.engine.has_unfinished():
        for out in llm.engine.step():
            if out.result is not None:
                return torch.tensor(out.result.token_logprobs[0])
    raise AssertionError("no result")


def test_fp8_kv_cache_runs_and_stays_close(tiny_model_dir, device):
    full = prompt_logprobs(engine(tiny_model_dir, device), PROMPTS[3])
    fp8 = engine(tiny_model_dir, device, kv_cache_dtype="fp8")
    assert fp8.engine.cache.keys[0].dtype == torch.float8_e4m3fn
    diffs = (prompt_logprobs(fp8, PROMPTS[3]) - full).abs()
    assert diffs.mean() < 0.15 and diffs.max() < 0.6  # tests/engine/test_fp8_kv_cache.py's bounds
    assert len(tokens(fp8, [PROMPTS[3]])[0]) == GREEDY.max_tokens


def test_async_engine_streams_concurrently_and_abort_frees_blocks(tiny_model_dir, device, alone):
    llm, client = start_async_engine(lambda: engine(tiny_model_dir, device))

    async def collect(i: int) -> list[int]:
        return [t async for step in client.generate(PROMPTS[i], GREEDY, f"r{i}") for d in step.deltas
                for t in d.token_ids]

    async def main() -> list[list[int]]:
        outs = await asyncio.gather(*(collect(i) for i in range(len(PROMPTS))))
        stream = client.generate(PROMPTS[3], SamplingParams(max_tokens=200, ignore_eos=True), "long")
        await stream.__anext__()
        await client.abort("long")
        await client.shutdown(timeout=5.0)
        return outs

    try:
        assert asyncio.run(asyncio.wait_for(main(), 120)) == alone
    finally:
        client.stop()
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks


def test_cuda_graphs_and_the_triton_backend_decode_the_eager_tokens(tiny_model_dir, device):
    if torch.device(device).type != "cuda":
        pytest.skip("CUDA graphs and the Triton backend run on a GPU (the CPU dry run has neither)")
    from qwick.model.attention.triton_paged import TritonPagedBackend, forced_backend

    graphed = engine(tiny_model_dir, device, max_num_seqs=20)
    if forced_backend() != "sdpa":
        assert isinstance(graphed.engine.runner.backend, TritonPagedBackend)
    graphs = graphed.engine.runner.graphs
    if graphs is None:
        pytest.skip("decode graphs are off (QWICK_TEST_ENFORCE_EAGER=1, or the SDPA backend)")
    assert graphs.sizes == [1, 2, 4, 8, 16, 20] and set(graphs.graphs) == set(graphs.sizes)
    eager = engine(tiny_model_dir, device, max_num_seqs=20, enforce_eager=True)
    assert eager.engine.runner.graphs is None
    prompts = PROMPTS + [[p + 1 for p in prompt] for prompt in PROMPTS[:3]]  # 11 rows: padded to 16
    assert tokens(graphed, prompts) == tokens(eager, prompts)
    params = [SamplingParams(max_tokens=10, temperature=0.8, top_k=20, seed=i, ignore_eos=True) for i in range(5)]
    assert tokens(graphed, prompts[:5], params) == tokens(eager, prompts[:5], params)
    assert tokens(graphed, prompts[:1]) == tokens(eager, prompts[:1])  # batch 1: the smallest graph
