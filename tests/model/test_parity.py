"""qwick's Qwen3 computes what transformers' Qwen3ForCausalLM computes (SPEC.md §2), on tiny random checkpoints."""

from __future__ import annotations

import pytest
import torch

from qwick.model.attention.metadata import AttentionMetadata
from qwick.model.kv_cache import PagedKVCache
from qwick.model.qwen3 import Qwen3ForCausalLM

from checkpoints import TINY_CONFIGS

CONFIGS = list(TINY_CONFIGS)
VOCAB = 1000
FP32_ATOL = 1e-4

# bfloat16 tolerances, measured on these three checkpoints (|logits| <= ~7, 256 positions, 6 seeds each,
# torch 2.13 CPU) once rope.py kept inv_freq in float32: ours bf16 vs transformers bf16 differed by exactly 0.0;
# each bf16 model vs the float32 reference differed by a mean 0.012-0.016 and a max 0.10-0.27 (heavy-tailed),
# ours and transformers identically. Bounds: 0.0625 vs transformers bf16 (two bf16 steps at |logit| in
# [4, 8)); vs float32 a mean 0.025 and a max 0.5, and our mean error at most 1.1x transformers' own.
# With the bfloat16 inv_freq that rope.py used to keep, the 0.0 was 0.16 and the mean error ratio 1.25.
BF16_VS_HF_BF16 = 0.0625
BF16_VS_FP32_MEAN = 0.025
BF16_VS_FP32_MAX = 0.5


def random_ids(seed: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


BLOCK_SIZE = 4
MAX_LEN = 256


def new_cache(model: Qwen3ForCausalLM, slots: int, dtype: torch.dtype = torch.float32) -> PagedKVCache:
    """A paged cache where "slot" s owns MAX_LEN positions, in blocks interleaved with the other slots'."""
    config = model.config
    return PagedKVCache(config.num_hidden_layers, slots * MAX_LEN // BLOCK_SIZE, BLOCK_SIZE,
                        config.num_key_value_heads, config.head_dim, dtype)


def block_table(cache: PagedKVCache, slot: int) -> list[int]:
    slots = cache.num_blocks // (MAX_LEN // BLOCK_SIZE)
    return list(range(slot, cache.num_blocks, slots))  # non-contiguous physical blocks on purpose


def step(model: Qwen3ForCausalLM, ids: torch.Tensor, positions: torch.Tensor, cache: PagedKVCache,
         slots: list[int]) -> torch.Tensor:
    """One forward through the cache; float32 logits [B, T, vocab]."""
    meta = AttentionMetadata.build(positions, [block_table(cache, s) for s in slots], BLOCK_SIZE)
    with torch.no_grad():
        return model.compute_logits(model(ids, positions, cache, meta))


def greedy(model: Qwen3ForCausalLM, prompt: list[int], steps: int, cache: PagedKVCache,
           slot: int) -> tuple[list[int], list[torch.Tensor]]:
    """Prefill, then one token at a time through `cache` row `slot`: (tokens, last-position logits per token)."""
    logits = step(model, torch.tensor([prompt]), torch.arange(len(prompt))[None], cache, [slot])[0, -1]
    tokens, all_logits = [int(logits.argmax())], [logits]
    while len(tokens) < steps:
        position = torch.tensor([[len(prompt) + len(tokens) - 1]])
        logits = step(model, torch.tensor([[tokens[-1]]]), position, cache, [slot])[0, -1]
        tokens.append(int(logits.argmax()))
        all_logits.append(logits)
    return tokens, all_logits


@pytest.mark.parametrize("name", CONFIGS)
def test_prefill_logits_match_transformers_without_cache(name, qwick_model, hf_model):
    ids = random_ids(0, 2, 24)
    with torch.no_grad():
        expected = hf_model(name)(ids).logits
        ours = qwick_model(name).compute_logits(qwick_model(name)(ids, torch.arange(24).expand(2, 24)))
    assert ours.dtype == torch.float32
    assert (ours - expected).abs().max() <= FP32_ATOL


@pytest.mark.parametrize("name", CONFIGS)
def test_prefill_logits_match_transformers_through_paged_cache(name, qwick_model, hf_model):
    ids = random_ids(1, 2, 24)
    with torch.no_grad():
        expected = hf_model(name)(ids).logits
    model = qwick_model(name)
    ours = step(model, ids, torch.arange(24).expand(2, 24), new_cache(model, 2), [0, 1])
    assert (ours - expected).abs().max() <= FP32_ATOL


@pytest.mark.parametrize("name", CONFIGS)
def test_greedy_decode_with_cache_matches_transformers_generate(name, qwick_model, hf_model):
    prompt = random_ids(2, 12).tolist()
    model = qwick_model(name)
    ours, _ = greedy(model, prompt, 32, new_cache(model, 1), slot=0)
    with torch.no_grad():
        expected = hf_model(name).generate(torch.tensor([prompt]), attention_mask=torch.ones(1, 12, dtype=torch.long),
                                           max_new_tokens=32, do_sample=False)
    assert ours == expected[0, 12:].tolist()


@pytest.mark.parametrize("name", CONFIGS)
def test_prefill_in_chunks_matches_one_prefill(name, qwick_model):
    model = qwick_model(name)
    ids = random_ids(3, 1, 20)
    positions = torch.arange(20)[None]
    whole = step(model, ids, positions, new_cache(model, 1), [0])
    cache = new_cache(model, 1)
    first = step(model, ids[:, :7], positions[:, :7], cache, [0])
    second = step(model, ids[:, 7:], positions[:, 7:], cache, [0])
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-5, rtol=0)


PROMPT_LENGTHS = (5, 13, 9)
DECODE_STEPS = 8


@pytest.fixture(scope="module")
def decoded_alone(qwick_model) -> dict[str, list[tuple[list[int], list[torch.Tensor]]]]:
    """Per config: each of the three prompts decoded alone in a one-row cache."""
    runs = {}
    for name in CONFIGS:
        model = qwick_model(name)
        runs[name] = [greedy(model, random_ids(10 + i, n).tolist(), DECODE_STEPS, new_cache(model, 1), slot=0)
                      for i, n in enumerate(PROMPT_LENGTHS)]
    return runs


@pytest.mark.parametrize("slots", [[0, 1, 2], [2, 0, 1], [2, 0], [1, 2]], ids=str)
@pytest.mark.parametrize("name", CONFIGS)
def test_batched_decode_of_different_lengths_matches_each_sequence_alone(name, slots, qwick_model, decoded_alone):
    model = qwick_model(name)
    cache = new_cache(model, 3)
    for tensor in cache.keys + cache.values:  # garbage everywhere: a read past a row's own length would show
        tensor.normal_(generator=torch.Generator().manual_seed(7))
    prompts = [random_ids(10 + i, n).tolist() for i, n in enumerate(PROMPT_LENGTHS)][: len(slots)]
    tokens: list[list[int]] = []
    for prompt, slot in zip(prompts, slots, strict=True):
        tokens.append([int(step(model, torch.tensor([prompt]), torch.arange(len(prompt))[None], cache, [slot])
                           [0, -1].argmax())])
    for i in range(1, DECODE_STEPS):
        positions = torch.tensor([[len(p) + i - 1] for p in prompts])  # a different position per row
        logits = step(model, torch.tensor([[t[-1]] for t in tokens]), positions, cache, slots)[:, -1]
        for row, alone in enumerate(decoded_alone[name][: len(slots)]):
            torch.testing.assert_close(logits[row], alone[1][i], atol=1e-5, rtol=0)
            tokens[row].append(int(logits[row].argmax()))
    assert tokens == [alone[0] for alone in decoded_alone[name][: len(slots)]]


@pytest.mark.parametrize("name", CONFIGS)
def test_bfloat16_logits_match_transformers_bfloat16(name, qwick_model, hf_model):
    # 256 positions: rope precision errors grow with the position, so a short prompt would hide them
    ids = random_ids(4, 1, 256)
    positions = torch.arange(256)[None]
    model = qwick_model(name, torch.bfloat16)
    with torch.no_grad():
        reference = hf_model(name)(ids).logits
        hf_bf16 = hf_model(name, torch.bfloat16)(ids).logits.float()
        ours = model.compute_logits(model(ids, positions))
        ours_cached = step(model, ids, positions, new_cache(model, 1, torch.bfloat16), [0])
    assert (ours - hf_bf16).abs().max() <= BF16_VS_HF_BF16
    assert (ours_cached - hf_bf16).abs().max() <= BF16_VS_HF_BF16
    ours_error, hf_error = (ours - reference).abs(), (hf_bf16 - reference).abs()
    assert ours_error.mean() <= BF16_VS_FP32_MEAN
    assert ours_error.max() <= BF16_VS_FP32_MAX
    assert ours_error.mean() <= 1.1 * hf_error.mean()  # no less accurate than the reference's own bf16
