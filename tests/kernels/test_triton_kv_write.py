"""The Triton KV write (kernels/triton/kv_write.py): new keys/values land at their slots of the paged cache."""

from __future__ import annotations

import pytest
import torch


def caches(slots: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: str):
    return (torch.zeros(slots, kv_heads, head_dim, dtype=dtype, device=device),
            torch.zeros(slots, kv_heads, head_dim, dtype=dtype, device=device))


@pytest.mark.parametrize(("kv_heads", "head_dim"), [(1, 64), (2, 128), (8, 128), (3, 32)])
def test_scattered_slots_from_a_strided_forward(triton_kernels, kernel_device, kv_heads, head_dim):
    tokens = 37
    k_cache, v_cache = caches(200, kv_heads, head_dim, torch.float32, kernel_device)
    # the layout attention hands over: [kv_heads, N, D] viewed as [N, kv_heads, D] (not contiguous)
    k = torch.randn(kv_heads, tokens, head_dim, device=kernel_device).transpose(0, 1)
    v = torch.randn(kv_heads, tokens, head_dim, device=kernel_device).transpose(0, 1)
    slots = torch.randperm(200, device=kernel_device)[:tokens]
    triton_kernels.kv_write.write_kv(k_cache, v_cache, k, v, slots)
    assert torch.equal(k_cache[slots], k) and torch.equal(v_cache[slots], v)
    untouched = torch.ones(200, dtype=torch.bool, device=kernel_device)
    untouched[slots] = False
    assert not k_cache[untouched].any() and not v_cache[untouched].any()


def test_negative_slots_are_skipped_and_mirrors_copy_chosen_tokens(triton_kernels, kernel_device):
    k_cache, v_cache = caches(64, 2, 64, torch.float32, kernel_device)
    k = torch.randn(4, 2, 64, device=kernel_device)
    v = torch.randn(4, 2, 64, device=kernel_device)
    write = triton_kernels.kv_write.write_kv
    write(k_cache, v_cache, k, v, torch.tensor([5, -1, 9, 10], device=kernel_device))
    assert torch.equal(k_cache[[5, 9, 10]], k[[0, 2, 3]]) and k_cache.count_nonzero() == 3 * 2 * 64
    write(k_cache, v_cache, k, v, torch.tensor([40, 41], device=kernel_device),
          tokens=torch.tensor([3, 0], device=kernel_device))  # a fork's private copy of two tokens
    assert torch.equal(k_cache[40], k[3]) and torch.equal(v_cache[41], v[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_values_are_cast_to_the_cache_dtype(triton_kernels, kernel_device, dtype):
    k_cache, v_cache = caches(16, 2, 64, dtype, kernel_device)
    # float32 values the cache dtype holds exactly (the interpreter rounds float32 -> bf16 by truncation)
    k = torch.randn(3, 2, 64, device=kernel_device).to(dtype).float()
    triton_kernels.kv_write.write_kv(k_cache, v_cache, k, -k, torch.tensor([0, 7, 15], device=kernel_device))
    assert torch.equal(k_cache[[0, 7, 15]], k.to(dtype)) and torch.equal(v_cache[[0, 7, 15]], (-k).to(dtype))


def test_no_tokens_is_a_no_op(triton_kernels, kernel_device):
    k_cache, v_cache = caches(8, 1, 64, torch.float32, kernel_device)
    empty = torch.empty(0, 1, 64, device=kernel_device)
    triton_kernels.kv_write.write_kv(k_cache, v_cache, empty, empty, torch.empty(0, dtype=torch.long,
                                                                                   device=kernel_device))
    assert not k_cache.any()
