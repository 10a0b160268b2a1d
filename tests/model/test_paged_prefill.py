"""The prefill-chunk attention op (kernels/csrc/paged_prefill.cpp) equals causal SDPA over the gathered context,
and the engine's flat step uses it for bfloat16 models with the same results as the SDPA path."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from qwick import LLM
from qwick.engine.readout import ContinuationLogprobs, ContinuationSpec
from qwick.kernels.build import cpu_has_flags
from qwick.kernels.cpu_ops import cpu_ops_available, paged_prefill, paged_prefill_available
from qwick.model.attention import cpu_paged

CPU = torch.device("cpu")
needs_op = pytest.mark.skipif(not paged_prefill_available(CPU, torch.bfloat16, torch.bfloat16, 128),
                              reason="needs AVX512-BF16 and a C++ compiler")
# bf16 in, float32 scores and sums, probabilities rounded to bf16 for P x V (as ATen's CPU flash kernel does),
# bf16 out: measured max error 0.0085 against float32 SDPA over these cases (outputs up to ~4: one bf16 step 0.016)
ATOL = 2e-2


def reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, table: torch.Tensor, start: int,
              block_size: int, scale: float) -> torch.Tensor:
    """Gather positions 0..start+T-1 and run causal (bottom-right aligned) SDPA in float32."""
    tokens = q.shape[0]
    pos = torch.arange(start + tokens)
    slots = table[pos // block_size] * block_size + pos % block_size
    k, v = keys[slots].float().transpose(0, 1), values[slots].float().transpose(0, 1)  # [kv_heads, L, D]
    mask = pos[None, :] <= start + torch.arange(tokens)[:, None]  # [T, L]
    out = F.scaled_dot_product_attention(q.float().transpose(0, 1), k, v, attn_mask=mask, scale=scale,
                                         enable_gqa=q.shape[1] != keys.shape[1])  # [heads, T, D]
    return out.transpose(0, 1)


@needs_op
@pytest.mark.parametrize(("tokens", "start", "heads", "kv_heads", "dim", "block_size"), [
    (47, 304, 16, 8, 128, 16),  # a moderation request's text after its cached instruction (0.6B's shape)
    (64, 0, 16, 8, 128, 16),  # a fresh prompt: its own keys only
    (1, 9, 16, 8, 128, 16),  # one token
    (40, 600, 16, 8, 128, 16),  # 640 keys: three steps of the online softmax
    (150, 20, 16, 8, 128, 16),  # 300 query rows: three tiles of at most 128
    (130, 3, 4, 4, 128, 8),  # GQA 1:1, small blocks
    (33, 250, 32, 8, 128, 32),  # GQA 4:1 (4B/8B), large blocks
    (17, 70, 64, 8, 128, 16),  # GQA 8:1 (32B)
    (20, 41, 4, 2, 32, 5),  # head_dim 32 (the tiny test models), odd block size, odd key count
    (9, 10, 8, 1, 96, 16),  # head_dim 96: three 32-wide value chunks
    (12, 100, 4, 2, 256, 16),  # head_dim 256
    (5, 0, 2, 1, 64, 16),  # fewer tokens than a tile row block
])
def test_matches_causal_sdpa_over_the_gathered_context(tokens: int, start: int, heads: int, kv_heads: int,
                                                       dim: int, block_size: int) -> None:
    gen = torch.Generator().manual_seed(tokens * 1000 + start)
    num_blocks = (start + tokens) // block_size + 8
    keys = torch.randn(num_blocks * block_size + 1, kv_heads, dim, generator=gen).bfloat16()
    values = torch.randn(num_blocks * block_size + 1, kv_heads, dim, generator=gen).bfloat16()
    table = torch.randperm(num_blocks, generator=gen)  # scattered blocks, more than needed
    q = (torch.randn(tokens, heads, dim, generator=gen) * 3).bfloat16()  # peaked softmaxes too
    scale = dim**-0.5
    got = paged_prefill(q, keys, values, table, start, block_size, scale)
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    torch.testing.assert_close(got.float(), reference(q, keys, values, table, start, block_size, scale),
                               atol=ATOL, rtol=0)


@needs_op
def test_a_chunk_sees_the_context_but_nothing_after_its_own_position() -> None:
    # values carry their position: token t's output is a weighted mean of positions 0..start+t, never later
    dim, block_size, start, tokens = 32, 16, 30, 20
    keys = torch.zeros(97, 1, dim).bfloat16()  # equal scores: a plain mean over the visible positions
    values = torch.arange(97, dtype=torch.float32)[:, None, None].expand(97, 1, dim).bfloat16().contiguous()
    table = torch.arange(6)
    got = paged_prefill(torch.ones(tokens, 1, dim).bfloat16(), keys, values, table, start, block_size, 1.0)
    expected = torch.tensor([(start + t) / 2 for t in range(tokens)])  # mean of 0..start+t
    torch.testing.assert_close(got[:, 0, 0].float(), expected, atol=0.13, rtol=0)  # bf16 steps at 16-32


@needs_op
def test_rejects_bad_arguments_with_a_message() -> None:
    q, cache, table = torch.zeros(4, 2, 32).bfloat16(), torch.zeros(65, 2, 32).bfloat16(), torch.arange(4)
    with pytest.raises(RuntimeError, match="takes bfloat16 queries and caches"):
        paged_prefill(q.float(), cache, cache, table, 0, 16, 1.0)
    with pytest.raises(RuntimeError, match="takes bfloat16 queries and caches"):
        paged_prefill(q, cache.float(), cache.float(), table, 0, 16, 1.0)
    with pytest.raises(RuntimeError, match="head_dim must be a multiple of 32"):
        paged_prefill(torch.zeros(4, 2, 18).bfloat16(), *[torch.zeros(65, 2, 18).bfloat16()] * 2, table, 0, 16, 1.0)
    with pytest.raises(RuntimeError, match="inside the block table"):
        paged_prefill(q, cache, cache, table, 61, 16, 1.0)  # positions up to 64: past 4 blocks of 16
    with pytest.raises(RuntimeError, match="outside the cache"):
        paged_prefill(q, cache, cache, torch.tensor([9, 0, 0, 0]), 0, 16, 1.0)
    with pytest.raises(RuntimeError, match="multiple of kv heads"):
        paged_prefill(torch.zeros(4, 3, 32).bfloat16(), cache, cache, table, 0, 16, 1.0)


def test_available_only_for_bfloat16_models_and_caches() -> None:
    assert not paged_prefill_available(CPU, torch.float32, torch.float32, 128)
    assert not paged_prefill_available(CPU, torch.bfloat16, torch.float8_e4m3fn, 128)  # fp8 caches: gather + SDPA
    assert not paged_prefill_available(CPU, torch.bfloat16, torch.bfloat16, 18)
    assert not paged_prefill_available(torch.device("meta"), torch.bfloat16, torch.bfloat16, 128)


@pytest.mark.skipif(not cpu_has_flags(("avx512f", "avx512bw", "avx512vl", "fma", "avx512_bf16"))
                    or shutil.which("c++") is None, reason="the op needs AVX512-BF16 and a C++ compiler")
def test_the_op_builds_where_it_can() -> None:
    # the tests above skip when the build fails: on a machine that can build it, a failure is a bug
    assert paged_prefill_available(CPU, torch.bfloat16, torch.bfloat16, 128)


def _scores(llm: LLM) -> list[ContinuationLogprobs]:
    """Scoring requests whose prompts share a prefix (prefix-cache hits, so chunks start mid-sequence) and are
    longer than a step's token budget (chunked prefill): every long chunk attends to a cached context."""
    prefix = [(7 * i) % 3000 + 100 for i in range(45)]
    work = [ContinuationSpec(prefix + [200 + i, 300 + i] * (10 + 9 * i), [[5, 6], [7], [8, 9, 10]]) for i in range(4)]
    outputs = []
    for i, spec in enumerate(work):  # one at a time: later ones hit the cached prefix
        llm.engine.add_readout(f"s{i}", spec)
        while llm.engine.has_unfinished():
            outputs += [out.result for out in llm.engine.step() if out.result is not None]
    return outputs


@needs_op
def test_bfloat16_engine_uses_the_op_and_agrees_with_sdpa(tiny_model_dir, monkeypatch) -> None:
    if not cpu_ops_available(CPU, torch.bfloat16):
        pytest.skip("the flat step needs qwick's CPU ops")
    calls = []
    original = torch.ops.qwick.paged_prefill
    monkeypatch.setattr("qwick.kernels.cpu_ops.torch.ops.qwick.paged_prefill",
                        lambda *args: calls.append(args[0].shape[0]) or original(*args), raising=False)

    def build() -> LLM:
        return LLM(tiny_model_dir, dtype="bfloat16", max_model_len=512, max_num_batched_tokens=48,
                   kv_cache_memory_bytes=4 << 20)

    in_place = build()
    assert in_place.engine.runner.backend.in_place_prefill
    got = _scores(in_place)
    assert calls and max(calls) > 16  # long chunks went through the op
    monkeypatch.setattr(cpu_paged, "paged_prefill_available", lambda *args: False)
    sdpa = build()
    assert not sdpa.engine.runner.backend.in_place_prefill
    expected = _scores(sdpa)
    exact = _scores(LLM(tiny_model_dir, dtype="float32", max_model_len=512, max_num_batched_tokens=48,
                        kv_cache_memory_bytes=8 << 20))
    assert len(got) == len(expected) == len(exact) == 4
    for a, b, c in zip(got, expected, exact, strict=True):
        assert a.num_context_tokens == b.num_context_tokens == c.num_context_tokens
        # bf16 activations round differently on the two paths; measured: op vs SDPA <= 0.032, each vs float32
        # <= 0.030 (logprobs of -9 to -40)
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=0.06, rtol=0)
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(c.logprobs), atol=0.06, rtol=0)
