"""Triton paged decode attention (kernels/triton/paged_decode.py) against float32 SDPA over the gathered context:
scattered (shuffled) blocks, GQA 1-8, head_dim 64/128, lengths 1..2048 across block boundaries, split-K on/off.

Each call puts rows of many lengths in one batch (the interpreter's cost is per call and per program)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

SHORT = [1, 15, 16, 17, 32, 33, 48, 100]  # around block boundaries of block_size 16


def paged_case(lengths: list[int], block_size: int, kv_heads: int, group: int, head_dim: int, dtype: torch.dtype,
               device: str, seed: int = 0):
    """Random caches, each row's blocks scattered at shuffled physical indices; tables zero-padded."""
    gen = torch.Generator().manual_seed(seed)
    needed = [-(-n // block_size) for n in lengths]
    num_blocks = sum(needed) + 3  # a few blocks nobody owns
    shape = (num_blocks * block_size + 1, kv_heads, head_dim)
    key_cache = torch.randn(shape, generator=gen).to(dtype)
    value_cache = torch.randn(shape, generator=gen).to(dtype)
    order = torch.randperm(num_blocks, generator=gen).tolist()
    width = max(needed)
    tables, used = [], 0
    for count in needed:
        tables.append(order[used : used + count] + [0] * (width - count))
        used += count
    q = torch.randn(len(lengths), kv_heads * group, head_dim, generator=gen).to(dtype)
    to = dict(device=device)
    return (q.to(**to), key_cache.to(**to), value_cache.to(**to), torch.tensor(tables, **to),
            torch.tensor(lengths, **to))


def reference(q, key_cache, value_cache, tables, lengths, block_size: int, scale: float) -> torch.Tensor:
    """float32 SDPA per row over its context gathered position by position: [N, heads, D]."""
    rows = []
    for row, length in enumerate(lengths.tolist()):
        pos = torch.arange(length, device=q.device)
        slots = tables[row, pos // block_size] * block_size + pos % block_size
        k = key_cache[slots].float().transpose(0, 1)  # [kv_heads, S, D]
        v = value_cache[slots].float().transpose(0, 1)
        out = F.scaled_dot_product_attention(q[row].float()[:, None], k, v, scale=scale, enable_gqa=True)
        rows.append(out[:, 0])
    return torch.stack(rows)


def check(kernels, lengths, block_size, kv_heads, group, head_dim, dtype, splits, device, atol):
    case = paged_case(lengths, block_size, kv_heads, group, head_dim, dtype, device)
    scale = head_dim**-0.5
    got = kernels.paged_decode.paged_decode(*case, block_size, scale, splits)
    assert got.dtype == dtype and got.shape == case[0].shape
    want = reference(*case, block_size, scale)
    torch.testing.assert_close(got.float(), want, atol=atol, rtol=0)


@pytest.mark.parametrize(("group", "head_dim", "splits"),
                         [(1, 64, 1), (1, 128, 3), (2, 64, 3), (4, 128, 1), (4, 64, 3), (8, 128, 3), (8, 64, 1)])
def test_short_contexts_across_block_boundaries(triton_kernels, kernel_device, group, head_dim, splits):
    check(triton_kernels, SHORT, 16, 2, group, head_dim, torch.float32, splits, kernel_device, 2e-5)


@pytest.mark.parametrize("block_size", [8, 32, 48])
def test_other_block_sizes(triton_kernels, kernel_device, block_size):
    lengths = [1, block_size - 1, block_size, block_size + 1, 3 * block_size, 3 * block_size + 1]
    check(triton_kernels, lengths, block_size, 2, 4, 64, torch.float32, 2, kernel_device, 2e-5)


@pytest.mark.parametrize(("group", "head_dim", "splits"), [(8, 128, None), (1, 64, 1), (2, 128, 16)])
def test_long_context(triton_kernels, kernel_device, group, head_dim, splits):
    check(triton_kernels, [2048, 1000], 16, 1, group, head_dim, torch.float32, splits, kernel_device, 2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("splits", [1, 4])
def test_half_precision_inputs_accumulate_in_float32(triton_kernels, kernel_device, dtype, splits):
    check(triton_kernels, [1, 17, 64, 300], 16, 2, 4, 128, dtype, splits, kernel_device, 3e-2)


def test_more_splits_than_tokens_leave_empty_splits_harmless(triton_kernels, kernel_device):
    check(triton_kernels, [1, 2, 3], 16, 2, 2, 64, torch.float32, 16, kernel_device, 2e-5)


def test_split_choice_fills_the_gpu_without_tiny_splits(triton_kernels):
    choose = triton_kernels.paged_decode.choose_splits
    assert choose(tokens=1, kv_heads=8, max_context=128) == 1  # short context: one split
    assert choose(tokens=1, kv_heads=8, max_context=40960) == triton_kernels.paged_decode.MAX_SPLITS
    assert choose(tokens=64, kv_heads=8, max_context=40960) == 1  # 512 programs already
    assert choose(tokens=4, kv_heads=8, max_context=4096) == 16
