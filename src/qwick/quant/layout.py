"""Weight layouts: the portable one (checkpoints, torch's kernels) and the blocked one qwick's CPU ops read.

Portable: int8 q [N, K]; int4 q as nibbles [N, ceil(K/2)] uint8, element 2j in the low nibble of byte j.
Blocked (csrc/woq_int8.cpp): rows in blocks of 4, each block stored step by step along K so a matvec reads
one sequential stream (4 separate row streams measured ~1.6x slower from DRAM: the prefetcher loses them):
  int8 [ceil(N/4), ceil(K/32), 4, 32]: step c holds columns 32c..32c+31 of the block's 4 rows.
  int4 [ceil(N/4), ceil(K/64), 4, 32] uint8: step c holds columns 64c..64c+63 of each row, byte j = column
       64c+j in the low nibble and 64c+32+j in the high one (one widening load yields both 32-column halves).
Padding rows and columns are zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROWS = 4  # rows per block, the kernel's kRows


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    # [N, K] ints 0..15 -> uint8 [N, ceil(K/2)], even column in the low nibble
    q = F.pad(q.to(torch.uint8), (0, q.shape[1] % 2))
    return q[:, ::2] | (q[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    # uint8 [N, ceil(K/2)] -> uint8 [N, K]
    return torch.stack([packed & 15, packed >> 4], dim=-1).view(packed.shape[0], -1)[:, :in_features]


def _pad(q: torch.Tensor, cols: int, rows: int) -> torch.Tensor:
    # zero rows/columns at the end; no copy when none are needed (lm_head is 155 MB in int8)
    return F.pad(q, (0, cols, 0, rows)) if cols or rows else q


def block_int8(q: torch.Tensor) -> torch.Tensor:
    # int8 [N, K] -> [ceil(N/4), ceil(K/32), 4, 32]
    n, k = q.shape
    padded = _pad(q, -k % 32, -n % ROWS)
    return padded.view(-1, ROWS, padded.shape[1] // 32, 32).transpose(1, 2).contiguous()


def block_int4(q: torch.Tensor) -> torch.Tensor:
    # [N, K] ints 0..15 -> uint8 [ceil(N/4), ceil(K/64), 4, 32]
    n, k = q.shape
    padded = _pad(q.to(torch.uint8), -k % 64, -n % ROWS)
    halves = padded.view(padded.shape[0], -1, 2, 32)  # [N', K'/64, 2, 32]
    chunks = halves[:, :, 0] | (halves[:, :, 1] << 4)  # [N', K'/64, 32]
    return chunks.view(-1, ROWS, chunks.shape[1], 32).transpose(1, 2).contiguous()


def gather_int8_rows(blocked: torch.Tensor, ids: torch.Tensor, in_features: int) -> torch.Tensor:
    # rows `ids` (any shape) of a blocked int8 matrix -> int8 [*ids.shape, K] (an embedding lookup)
    flat = ids.reshape(-1)
    rows = blocked[flat // ROWS, :, flat % ROWS, :]  # [T, K'/32, 32]
    return rows.reshape(flat.numel(), -1)[:, :in_features].reshape(*ids.shape, in_features)
