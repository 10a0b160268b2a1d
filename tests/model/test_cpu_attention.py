"""qwick's paged decode attention op (model/csrc/paged_attention.cpp) equals SDPA over the gathered context."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwick.model.cpu_attention import paged_decode, paged_decode_available
from qwick.model.kv_cache import AttentionMetadata

needs_op = pytest.mark.skipif(not paged_decode_available(torch.device("cpu"), torch.float32),
                              reason="needs AVX-512F and a C++ compiler")
# float32: only summation order differs; bfloat16: the op keeps float32 scores and sums, SDPA's math differs
# in where it rounds to bfloat16 (measured max 0.0078 over these cases: one bf16 step at |out| in [1, 2))
ATOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, tables: torch.Tensor,
              lens: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """Row by row: gather positions 0..len-1 and run SDPA in float32."""
    out = []
    for b in range(q.shape[0]):
        pos = torch.arange(int(lens[b]))
        slots = tables[b, pos // block_size] * block_size + pos % block_size
        k = keys[slots].float().transpose(0, 1)  # [kv_heads, L, D]
        v = values[slots].float().transpose(0, 1)
        o = F.scaled_dot_product_attention(q[b].float()[:, None], k, v, scale=scale,
                                           enable_gqa=q.shape[1] != keys.shape[1])  # [heads, 1, D]
        out.append(o[:, 0])
    return torch.stack(out)


@needs_op
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(16, 8, 128), (4, 1, 64), (2, 2, 32), (6, 2, 18), (8, 2, 256)])
def test_matches_sdpa_on_scattered_blocks(dtype: torch.dtype, heads: int, kv_heads: int, dim: int) -> None:
    gen = torch.Generator().manual_seed(heads * 1000 + dim)
    block_size, num_blocks, batch = 16, 64, 5
    keys = torch.randn(num_blocks * block_size + 1, kv_heads, dim, generator=gen).to(dtype)
    values = torch.randn(num_blocks * block_size + 1, kv_heads, dim, generator=gen).to(dtype)
    lens = torch.tensor([1, 15, 16, 17, 200])  # one position, partial block, exactly one block, one past, many
    tables = torch.stack([torch.randperm(num_blocks, generator=gen)[:13] for _ in range(batch)])  # scattered
    q = (torch.randn(batch, heads, dim, generator=gen) * 3).to(dtype)  # peaked softmaxes too
    scale = dim**-0.5
    got = paged_decode(q, keys, values, tables, lens, block_size, scale)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.float(), reference(q, keys, values, tables, lens, block_size, scale),
                               atol=ATOL[dtype], rtol=0)


@needs_op
def test_rejects_bad_arguments_with_a_message() -> None:
    q = torch.zeros(2, 4, 32)
    cache = torch.zeros(65, 2, 32)
    tables = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="context_lens out of the block tables"):
        paged_decode(q, cache, cache, tables, torch.tensor([1, 65]), 16, 1.0)
    with pytest.raises(RuntimeError, match="context_lens out of the block tables"):
        paged_decode(q, cache, cache, tables, torch.tensor([0, 3]), 16, 1.0)
    with pytest.raises(RuntimeError, match="share a dtype"):
        paged_decode(q.bfloat16(), cache, cache, tables, torch.tensor([1, 3]), 16, 1.0)
    with pytest.raises(RuntimeError, match="multiple of kv heads"):
        paged_decode(torch.zeros(2, 3, 32), cache, cache, tables, torch.tensor([1, 3]), 16, 1.0)


@needs_op
def test_metadata_describes_decode_by_tables_and_lengths() -> None:
    positions = torch.tensor([[4], [0], [9]])
    meta = AttentionMetadata.build(positions, [[3, 1], [7], [2, 5, 6]], 4, paged_decode=True)
    assert meta.groups == []
    assert meta.context_lens is not None and meta.context_lens.tolist() == [5, 1, 10]
    assert meta.block_tables is not None and meta.block_tables.tolist() == [[3, 1, 0], [7, 0, 0], [2, 5, 6]]
    assert meta.slot_mapping.tolist() == [1 * 4 + 0, 7 * 4 + 0, 6 * 4 + 1]
    single = AttentionMetadata.build(torch.tensor([[2]]), [[5]], 4, paged_decode=True)
    assert single.block_tables is not None and single.block_tables.tolist() == [[5, 0]]  # never width 1


def test_unavailable_off_cpu_for_other_dtypes_and_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not paged_decode_available(torch.device("meta"), torch.float32)
    assert not paged_decode_available(torch.device("cpu"), torch.float16)
    monkeypatch.setenv("QWICK_CPU_ATTENTION", "sdpa")
    assert not paged_decode_available(torch.device("cpu"), torch.float32)
