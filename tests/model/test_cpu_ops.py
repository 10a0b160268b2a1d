"""qwick's CPU ops (kernels/csrc): paged decode attention equals SDPA over the gathered context; the norm and
rotary ops equal the torch code they replace."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from qwick.kernels.build import cpu_has_flags
from qwick.kernels.cpu_ops import cpu_ops_available, paged_decode, qk_norm_rope, rms_norm, usable
from qwick.model.attention.metadata import AttentionMetadata

needs_op = pytest.mark.skipif(not cpu_ops_available(torch.device("cpu"), torch.float32),
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
@pytest.mark.parametrize(("heads", "kv_heads", "dim"),
                         [(16, 8, 128), (4, 4, 128), (8, 2, 128), (32, 4, 128), (4, 1, 64), (2, 2, 32), (6, 2, 18), (8, 2, 256)])
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
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(16, 8, 128), (8, 2, 128), (32, 8, 128), (4, 1, 64), (6, 2, 18)])
def test_reads_an_fp8_cache_exactly_as_its_widened_values(dtype: torch.dtype, heads: int, kv_heads: int,
                                                          dim: int) -> None:
    gen = torch.Generator().manual_seed(heads * 100 + dim)
    block_size, num_blocks, batch = 16, 40, 4
    # e4m3 covers +-448 with subnormals below 2^-6: the values span normals, subnormals, zero and the maximum
    keys = (torch.randn(num_blocks * block_size + 1, kv_heads, dim, generator=gen) * 4).to(torch.float8_e4m3fn)
    values = (torch.randn(num_blocks * block_size + 1, kv_heads, dim, generator=gen) / 64).to(torch.float8_e4m3fn)
    keys[0, 0, :4] = torch.tensor([448.0, -448.0, 0.0, -2**-9]).to(torch.float8_e4m3fn)
    lens = torch.tensor([1, 16, 17, 150])
    tables = torch.stack([torch.randperm(num_blocks, generator=gen)[:10] for _ in range(batch)])
    tables[0, 0] = 0  # the row of length 1 reads slot 0, with the extremes
    q = torch.randn(batch, heads, dim, generator=gen).to(dtype)
    scale = dim**-0.5
    got = paged_decode(q, keys, values, tables, lens, block_size, scale)
    assert got.dtype == dtype
    expected = reference(q, keys.float(), values.float(), tables, lens, block_size, scale)  # widened by torch
    torch.testing.assert_close(got.float(), expected, atol=ATOL[dtype] / 64 if dtype == torch.bfloat16 else 1e-6,
                               rtol=0 if dtype == torch.float32 else 1e-2)


@needs_op
def test_rejects_bad_arguments_with_a_message() -> None:
    q = torch.zeros(2, 4, 32)
    cache = torch.zeros(65, 2, 32)
    tables = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="context_lens out of the block tables"):
        paged_decode(q, cache, cache, tables, torch.tensor([1, 65]), 16, 1.0)
    with pytest.raises(RuntimeError, match="context_lens out of the block tables"):
        paged_decode(q, cache, cache, tables, torch.tensor([0, 3]), 16, 1.0)
    with pytest.raises(RuntimeError, match="caches must share q's dtype or both be float8_e4m3fn"):
        paged_decode(q.bfloat16(), cache, cache, tables, torch.tensor([1, 3]), 16, 1.0)
    with pytest.raises(RuntimeError, match="multiple of kv heads"):
        paged_decode(torch.zeros(2, 3, 32), cache, cache, tables, torch.tensor([1, 3]), 16, 1.0)


@needs_op
def test_metadata_describes_decode_by_tables_and_lengths() -> None:
    positions = torch.tensor([[4], [0], [9]])
    meta = AttentionMetadata.build(positions, [[3, 1], [7], [2, 5, 6]], 4, paged=True)
    assert meta.groups == []
    assert meta.context_lens is not None and meta.context_lens.tolist() == [[5], [1], [10]]
    assert meta.block_tables is not None and meta.block_tables.tolist() == [[3, 1, 0], [7, 0, 0], [2, 5, 6]]
    assert meta.slot_mapping.tolist() == [1 * 4 + 0, 7 * 4 + 0, 6 * 4 + 1]


def test_unavailable_off_cpu_for_other_dtypes_and_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not cpu_ops_available(torch.device("meta"), torch.float32)
    assert not cpu_ops_available(torch.device("cpu"), torch.float16)
    monkeypatch.setenv("QWICK_CPU_OPS", "torch")
    assert not cpu_ops_available(torch.device("cpu"), torch.float32)


def torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """layers.RMSNorm's torch code."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def torch_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def assert_matches_torch(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same math and roundings; only the mean's summation order differs, which moves 1/rms by an ulp or so:
    float32 then differs in the last bits (measured ~20% of elements), bfloat16 rarely rounds differently (nearly
    every element bitwise equal, the rest one bf16 step apart)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == torch.bfloat16:
        assert (got == want).float().mean().item() >= 0.99
    torch.testing.assert_close(got.float(), want.float(), atol=2e-6 if got.dtype == torch.float32 else 0,
                               rtol=2**-7 if got.dtype == torch.bfloat16 else 1e-6)


@needs_op
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [1024, 128, 18])
def test_rms_norm_op_matches_the_torch_code(dtype: torch.dtype, dim: int) -> None:
    gen = torch.Generator().manual_seed(dim)
    x = (torch.randn(5, 3, dim, generator=gen) * 4).to(dtype)
    weight = (torch.rand(dim, generator=gen) + 0.5).to(dtype)
    assert_matches_torch(rms_norm(x, weight, 1e-6), torch_rms_norm(x, weight, 1e-6))


@needs_op
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "dim"), [(16, 128), (2, 64), (3, 18)])
def test_qk_norm_rope_op_matches_the_torch_code(dtype: torch.dtype, heads: int, dim: int) -> None:
    gen = torch.Generator().manual_seed(heads * dim)
    n = 7
    x = (torch.randn(n, heads, dim, generator=gen) * 4).to(dtype)
    weight = (torch.rand(dim, generator=gen) + 0.5).to(dtype)
    angles = torch.rand(n, dim // 2, generator=gen) * 100
    cos, sin = torch.cat((angles, angles), -1).cos().to(dtype), torch.cat((angles, angles), -1).sin().to(dtype)
    want = torch_rotary(torch_rms_norm(x, weight, 1e-6), cos[:, None], sin[:, None])  # [n, heads, dim]
    assert_matches_torch(qk_norm_rope(x, weight, 1e-6, cos, sin), want)


@needs_op
def test_norm_ops_reject_bad_arguments_with_a_message() -> None:
    with pytest.raises(RuntimeError, match="share a dtype"):
        rms_norm(torch.zeros(2, 8), torch.ones(8, dtype=torch.bfloat16), 1e-6)
    with pytest.raises(RuntimeError, match="must match x's last dim"):
        rms_norm(torch.zeros(2, 8), torch.ones(4), 1e-6)
    with pytest.raises(RuntimeError, match="cos and sin are"):
        qk_norm_rope(torch.zeros(2, 3, 8), torch.ones(8), 1e-6, torch.zeros(2, 4), torch.zeros(2, 4))


def test_ops_are_skipped_for_tensors_that_need_gradients() -> None:
    assert not usable(torch.zeros(2, 8, requires_grad=True))
    assert not usable(torch.zeros(8, 2).t())  # not contiguous


@pytest.mark.skipif(not cpu_has_flags(("avx512f", "avx512bw", "avx512vl", "fma")) or shutil.which("c++") is None,
                    reason="the ops need AVX-512 and a C++ compiler")
def test_the_ops_build_where_they_can() -> None:
    # the other tests here skip when the build fails: on a machine that can build them, a failure is a bug
    assert cpu_ops_available(torch.device("cpu"), torch.bfloat16)
