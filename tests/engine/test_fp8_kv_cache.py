"""kv_cache_dtype="fp8": keys and values stored as float8 e4m3 (vLLM's option): twice (bf16) or four times
(float32) the tokens per budget, attention close to the full-precision cache's, every error named."""

from __future__ import annotations

import pytest
import torch

from qwick import LLM, SamplingParams
from qwick.engine.readout import ContinuationSpec
from qwick.model.kv_cache import PagedKVCache

CONTEXT = [(7 * j) % 5000 + 100 for j in range(60)]
PER_TOKEN_FP32 = 2 * 2 * 2 * 32 * 4  # layers * (k, v) * kv_heads * head_dim * fp32 bytes (the tiny model)


def _prompt_logprobs(llm: LLM) -> torch.Tensor:
    """Logprobs of CONTEXT[1:] after CONTEXT[0], through the scoring path (every position reads the cache)."""
    llm.engine.add_readout("s", ContinuationSpec(CONTEXT[:1], [CONTEXT[1:]]))
    while llm.engine.has_unfinished():
        for out in llm.engine.step():
            if out.result is not None:
                return torch.tensor(out.result.token_logprobs[0])
    raise AssertionError("no result")


@pytest.mark.usefixtures("step_path")
def test_fp8_cache_stays_close_to_the_full_precision_one(tiny_model_dir):
    full = _prompt_logprobs(LLM(tiny_model_dir, dtype="float32", max_model_len=256))
    fp8 = LLM(tiny_model_dir, dtype="float32", max_model_len=256, kv_cache_dtype="fp8")
    assert fp8.engine.cache.keys[0].dtype == torch.float8_e4m3fn
    approx = _prompt_logprobs(fp8)
    # e4m3 keeps 3 mantissa bits (~6% per value): the tiny random model's logprobs move by a few hundredths
    # on average (measured mean 0.06, max 0.19 over these 59 positions); a broken cache moves them by whole units
    assert (approx - full).abs().mean() < 0.15 and (approx - full).abs().max() < 0.6
    out = fp8.generate({"prompt_token_ids": CONTEXT}, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 8


@pytest.mark.parametrize(("dtype", "ratio"), [("float32", 4), ("bfloat16", 2)])
def test_fp8_cache_holds_more_tokens_per_budget(tiny_model_dir, dtype, ratio):
    budget = 32 * 16 * PER_TOKEN_FP32  # 32 float32 blocks
    full = LLM(tiny_model_dir, dtype=dtype, max_model_len=256, kv_cache_memory_bytes=budget, max_num_seqs=64)
    fp8 = LLM(tiny_model_dir, dtype=dtype, max_model_len=256, kv_cache_memory_bytes=budget, max_num_seqs=64,
              kv_cache_dtype="fp8_e4m3")
    assert fp8.engine.cache.num_blocks == ratio * full.engine.cache.num_blocks
    assert fp8.engine.cache.nbytes() <= budget + 2 * 2 * 32 * 2 * 4  # + the scratch slots


def test_values_beyond_the_fp8_range_are_clamped_not_nan():
    cache = PagedKVCache(1, 2, 4, 1, 4, torch.float8_e4m3fn, compute_dtype=torch.float32)
    k = torch.tensor([[1000.0, -1000.0, 0.5, 3.0]]).view(1, 1, 1, 4)  # [B, kv_heads, T, D]
    cache.write(0, k, k, torch.tensor([2]))
    keys, _ = cache.gather(0, torch.tensor([[2]]))
    assert keys.dtype == torch.float32
    assert keys.flatten().tolist() == [448.0, -448.0, 0.5, 3.0]
    cache.copy_block(0, 1)  # copy-on-write works on the fp8 bytes
    assert cache.gather(0, torch.tensor([[6]]))[0].flatten().tolist() == [448.0, -448.0, 0.5, 3.0]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kv_cache_dtype": "fp8_e5m2"}, "'fp8_e5m2' is not supported: qwick stores an fp8 KV cache as e4m3"),
    ({"kv_cache_dtype": "int8"}, "kv_cache_dtype must be one of auto, fp8, fp8_e4m3, got 'int8'"),
    ({"kv_cache_dtype": "fp8", "compile_decode": True}, "compile_decode does not support an fp8 KV cache"),
])
def test_unsupported_kv_cache_dtypes_are_refused_by_name(tiny_model_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LLM(tiny_model_dir, dtype="float32", max_model_len=256, **kwargs)
