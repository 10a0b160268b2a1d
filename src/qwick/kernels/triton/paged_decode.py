"""Triton kernels: paged decode attention, each query token reading its sequence's KV blocks in place.

Every query token (a decode, or one token of a short prefill chunk) has its own block table row and context
length. One program handles one token x one KV head x one split of the context: the query heads of that KV
head (GQA) form the rows of one [BLOCK_H, D] x [D, BLOCK_N] dot, padded to 16 rows as `tl.dot` requires.
Split-K: long contexts are cut into `num_splits` parts per row (each row's own length / num_splits, so the
split count can stay fixed under a CUDA graph); each part keeps its output and log-sum-exp, and a second
kernel merges them. Softmax runs in base 2 (exp2), accumulation in float32; bf16 / fp16 / fp32 inputs; any
head_dim up to 256 (Qwen3: 128) and any block size. Only Triton 3.6 features. On a GPU the dots take bf16/fp16
operands (tensor cores); Triton's CPU interpreter computes bf16 dots wrongly (numpy has no bfloat16), so there,
only, bf16 operands are widened to float32 first (UPCAST): the interpreter checks the algorithm, not bf16 dots.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 32  # context tokens per inner step (each gathered by its own slot: any block size works)
MAX_SPLITS = 16
MIN_SPLIT_TOKENS = 256  # a split shorter than this costs more in the merge than it wins in parallelism
TARGET_PROGRAMS = 512  # enough programs to fill an H100's 132 SMs a few times over
LOG2E = 1.4426950408889634


@triton.jit
def _paged_decode_split(Q, K, V, Tables, Lens, Out, PartOut, PartLse, qk_scale,
                        stride_qn, stride_qh, stride_ks, stride_kh, stride_tn,
                        stride_on, stride_oh, stride_pn, stride_ph, stride_ps, stride_ln, stride_lh,
                        block_size, num_splits,
                        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, DIRECT: tl.constexpr,
                        PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    n = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    length = tl.load(Lens + n).to(tl.int32)
    # this split's part of the row's context, whole BLOCK_N steps long
    per_split = ((length + num_splits - 1) // num_splits + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    lo = split * per_split
    hi = tl.minimum(lo + per_split, length)
    rows = tl.arange(0, BLOCK_H)
    heads = kv_head * GROUP + rows
    row_ok = rows < GROUP
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(Q + n * stride_qn + heads[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_H, BLOCK_D]
    if UPCAST:
        q = q.to(tl.float32)
    m = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)  # running max (base-2 logits)
    total = tl.zeros([BLOCK_H], dtype=tl.float32)  # running sum of exp2
    acc = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    table = Tables + n.to(tl.int64) * stride_tn
    for start in range(lo, hi, BLOCK_N):
        pos = start + tl.arange(0, BLOCK_N)
        pos_ok = pos < hi
        block = tl.load(table + pos // block_size, mask=pos_ok, other=0).to(tl.int64)
        slot = block * block_size + pos % block_size  # [BLOCK_N] int64
        kv_at = slot[:, None] * stride_ks + kv_head * stride_kh + d[None, :]
        kv_ok = pos_ok[:, None] & d_ok[None, :]
        k = tl.load(K + kv_at, mask=kv_ok, other=0.0)  # [BLOCK_N, BLOCK_D]
        if UPCAST:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_H, BLOCK_N]
        s = tl.where(pos_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m - m_new)
        total = total * alpha + tl.sum(p, 1)
        v = tl.load(V + kv_at, mask=kv_ok, other=0.0)  # [BLOCK_N, BLOCK_D]
        if UPCAST:
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m = m_new
    if DIRECT:  # one split: the normalised output straight into Out
        out = acc / total[:, None]
        tl.store(Out + n * stride_on + heads[:, None] * stride_oh + d[None, :], out.to(Out.dtype.element_ty),
                 mask=row_ok[:, None] & d_ok[None, :])
    else:  # an empty split (hi <= lo) stores lse -inf and zeros: weight 0 in the merge
        safe = tl.where(total > 0, total, 1.0)
        tl.store(PartOut + n * stride_pn + heads[:, None] * stride_ph + split * stride_ps + d[None, :],
                 acc / safe[:, None], mask=row_ok[:, None] & d_ok[None, :])
        lse = tl.where(total > 0, m + tl.log2(safe), float("-inf"))
        tl.store(PartLse + n * stride_ln + heads * stride_lh + split, lse, mask=row_ok)


@triton.jit
def _merge_splits(PartOut, PartLse, Out, stride_pn, stride_ph, stride_ps, stride_ln, stride_lh,
                  stride_on, stride_oh, num_splits,
                  HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    n = tl.program_id(0)
    head = tl.program_id(1)
    s = tl.arange(0, BLOCK_S)
    s_ok = s < num_splits
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    lse = tl.load(PartLse + n * stride_ln + head * stride_lh + s, mask=s_ok, other=float("-inf"))  # [BLOCK_S]
    top = tl.max(lse, 0)
    top = tl.where(top == float("-inf"), 0.0, top)  # no token at all (never for a real row): zeros, not NaN
    weight = tl.exp2(lse - top)  # [BLOCK_S]
    parts = tl.load(PartOut + n * stride_pn + head * stride_ph + s[:, None] * stride_ps + d[None, :],
                    mask=s_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_S, BLOCK_D]
    norm = tl.sum(weight, 0)
    out = tl.sum(parts * weight[:, None], 0) / tl.where(norm > 0, norm, 1.0)
    tl.store(Out + n * stride_on + head * stride_oh + d, out.to(Out.dtype.element_ty), mask=d_ok)


def choose_splits(tokens: int, kv_heads: int, max_context: int) -> int:
    """How many parts to cut each context into: enough programs to fill the GPU, none shorter than
    MIN_SPLIT_TOKENS at the longest context, at most MAX_SPLITS. Depends on shapes only (no device sync)."""
    by_length = triton.cdiv(max_context, MIN_SPLIT_TOKENS)
    by_occupancy = triton.cdiv(TARGET_PROGRAMS, max(1, tokens * kv_heads))
    return max(1, min(MAX_SPLITS, by_length, by_occupancy))


def paged_decode(q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, block_size: int, scale: float, num_splits: int | None = None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """q [N, heads, D] (D contiguous); caches [slots, kv_heads, D]; block_tables [N, W] and context_lens [N]
    (>= 1) int64 -> [N, heads, D] in q's dtype. num_splits: None picks by shape (choose_splits); 1: no split."""
    tokens, heads, head_dim = q.shape
    kv_heads = key_cache.shape[1]
    assert heads % kv_heads == 0 and q.stride(2) == 1 and key_cache.stride(2) == 1
    assert key_cache.stride() == value_cache.stride() and key_cache.dtype == q.dtype
    if out is None:
        out = torch.empty(tokens, heads, head_dim, dtype=q.dtype, device=q.device)
    if tokens == 0:
        return out
    if num_splits is None:
        num_splits = choose_splits(tokens, kv_heads, block_tables.shape[1] * block_size)
    group = heads // kv_heads
    block_d = triton.next_power_of_2(head_dim)
    precision = "ieee" if q.dtype == torch.float32 else None  # fp32 parity: no TF32 in the dots
    direct = num_splits == 1
    # [N, heads, splits, D] and [N, heads, splits] float32 per-split results (one split: written straight to out)
    part_out = torch.empty(tokens if not direct else 1, heads, num_splits, head_dim, dtype=torch.float32,
                           device=q.device)
    part_lse = torch.empty(tokens if not direct else 1, heads, num_splits, dtype=torch.float32, device=q.device)
    _paged_decode_split[(tokens, kv_heads, num_splits)](
        q, key_cache, value_cache, block_tables, context_lens, out, part_out, part_lse, scale * LOG2E,
        q.stride(0), q.stride(1), key_cache.stride(0), key_cache.stride(1), block_tables.stride(0),
        out.stride(0), out.stride(1), part_out.stride(0), part_out.stride(1), part_out.stride(2),
        part_lse.stride(0), part_lse.stride(1), block_size, num_splits,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_H=max(16, triton.next_power_of_2(group)), BLOCK_D=block_d,
        BLOCK_N=BLOCK_N, DIRECT=direct, PRECISION=precision,
        UPCAST=q.dtype == torch.bfloat16 and q.device.type == "cpu",
    )
    if not direct:
        _merge_splits[(tokens, heads)](
            part_out, part_lse, out, part_out.stride(0), part_out.stride(1), part_out.stride(2),
            part_lse.stride(0), part_lse.stride(1), out.stride(0), out.stride(1), num_splits,
            HEAD_DIM=head_dim, BLOCK_S=triton.next_power_of_2(num_splits), BLOCK_D=block_d,
        )
    return out
