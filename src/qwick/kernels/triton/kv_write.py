"""Triton kernel: a forward's new keys/values into the paged KV cache at their slots (the slot mapping).

One program per new token copies its [kv_heads, D] keys and values to `cache[slot]`; a negative slot is
skipped (vLLM's convention for padding). `tokens` picks which token each slot takes (a flat step's mirror
writes: model/attention/flat.py), else slot i takes token i.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _kv_write_kernel(K, V, KC, VC, Slots, Tokens,
                     stride_kn, stride_kh, stride_vn, stride_vh, stride_cs, stride_ch,
                     KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr,
                     BLOCK_D: tl.constexpr, HAS_TOKENS: tl.constexpr):
    i = tl.program_id(0)
    slot = tl.load(Slots + i).to(tl.int64)  # int64: slot * stride passes 2**31 in a large cache
    token = i.to(tl.int64)
    if HAS_TOKENS:
        token = tl.load(Tokens + i).to(tl.int64)
    if slot >= 0:
        h = tl.arange(0, BLOCK_H)
        d = tl.arange(0, BLOCK_D)
        mask = (h[:, None] < KV_HEADS) & (d[None, :] < HEAD_DIM)
        k = tl.load(K + token * stride_kn + h[:, None] * stride_kh + d[None, :], mask=mask)
        v = tl.load(V + token * stride_vn + h[:, None] * stride_vh + d[None, :], mask=mask)
        at = slot * stride_cs + h[:, None] * stride_ch + d[None, :]
        tl.store(KC + at, k.to(KC.dtype.element_ty), mask=mask)
        tl.store(VC + at, v.to(VC.dtype.element_ty), mask=mask)


def write_kv(key_cache: torch.Tensor, value_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slots: torch.Tensor, tokens: torch.Tensor | None = None) -> None:
    """k, v [N, kv_heads, D] (any token/head strides, D contiguous) into the caches [slots, kv_heads, D] at
    slots [M] (int64; -1: skip); `tokens` [M]: the token of k/v each slot takes (default: slot i <- token i)."""
    count = slots.numel()
    if count == 0:
        return
    kv_heads, head_dim = k.shape[1], k.shape[2]
    assert k.stride(2) == 1 and v.stride(2) == 1 and key_cache.stride(2) == 1, "head_dim must be contiguous"
    assert key_cache.stride() == value_cache.stride()
    _kv_write_kernel[(count,)](
        k, v, key_cache, value_cache, slots, tokens if tokens is not None else slots,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), key_cache.stride(0), key_cache.stride(1),
        KV_HEADS=kv_heads, HEAD_DIM=head_dim, BLOCK_H=triton.next_power_of_2(kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim), HAS_TOKENS=tokens is not None,
    )
