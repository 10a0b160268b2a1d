// bfloat16 Linear on CPUs with AVX512-BF16 and no AMX (Zen 4): qwick::linear_bf16.
//
// Why: oneDNN's packed bf16 GEMM (torch 2.13) streams a 0.6B layer stack's weights at ~24 GB/s for one row and
// reaches 190 GFLOP/s at 8 rows on Zen 4; batch-1 and small-batch decode are bound by that read. This kernel reads
// each weight once per 8 rows in the order it is stored, with software prefetch: 33 GB/s at one row (the
// machine's read bandwidth), 250 GFLOP/s at 8 rows, on par with oneDNN from 256 rows on. AMX CPUs keep oneDNN,
// whose tile instructions are several times faster than these dot products.
//
// Layout (passes/cpu_packing.py packs it): weight [N, K] -> [N / 16, K / 2, 16, 2]: for each 16 outputs, for each
// pair of inputs, the 16 outputs' pairs side by side, the operand order of vdpbf16ps (16 float32 sums of bf16 x
// bf16 pair products). N % 16 == 0, K % 2 == 0.
// x [M, K] bfloat16 -> out [M, N] bfloat16 (float32 sums rounded to nearest even, as torch rounds).
// Tiles of 48 outputs are split between threads; each tile runs its rows in balanced blocks of at most 8, the 8 x
// 48 block's 24 accumulators in registers, so a tile's weights (<= 288 KB) are read from memory once and from L2
// by the later blocks.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "simd.h"

namespace {

constexpr int GROUPS = 3;      // 16-output groups per tile
constexpr int MAX_ROWS = 8;    // rows per register block
constexpr int64_t AHEAD = 32;  // input pairs (2 KB of a group's weights) prefetched ahead

// out[r][16g + j] = sum over pairs p of x[r] pair p . w[g][p][j], for R rows and G groups (R x G accumulators).
template <int R, int G>
void block(const uint32_t* x, int64_t pairs, const uint32_t* w, uint16_t* out, int64_t ldo) {
  __m512 acc[R][G];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh wv[G];
    for (int g = 0; g < G; ++g) {
      wv[g] = (__m512bh)_mm512_loadu_si512(w + (g * pairs + p) * 16);
      _mm_prefetch(reinterpret_cast<const char*>(w + (g * pairs + p + AHEAD) * 16), _MM_HINT_T0);
    }
    for (int r = 0; r < R; ++r) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[r * pairs + p]));
      for (int g = 0; g < G; ++g) acc[r][g] = _mm512_dpbf16_ps(acc[r][g], wv[g], xv);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) qwick::store16(out + r * ldo + 16 * g, acc[r][g]);
}

// `rows` (1..R) rows: the largest instantiation that fits.
template <int R, int G>
void block_of(int64_t rows, const uint32_t* x, int64_t pairs, const uint32_t* w, uint16_t* out, int64_t ldo) {
  if constexpr (R > 1) {
    if (rows < R) return block_of<R - 1, G>(rows, x, pairs, w, out, ldo);
  }
  block<R, G>(x, pairs, w, out, ldo);
}

template <int G>
void tile(int64_t M, const uint32_t* x, int64_t pairs, const uint32_t* w, uint16_t* out, int64_t ldo) {
  const int64_t blocks = (M + MAX_ROWS - 1) / MAX_ROWS;
  for (int64_t b = 0, r = 0; b < blocks; ++b) {  // balanced: 47 rows are 7 + 8 x 5, not 8 x 5 + 7 in 1-row tails
    const int64_t rows = (M - r) / (blocks - b);
    block_of<MAX_ROWS, G>(rows, x + r * pairs, pairs, w, out + r * ldo, ldo);
    r += rows;
  }
}

at::Tensor linear_bf16(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 4 && weight.size(2) == 16 && weight.size(3) == 2,
              "x [M, K] and a packed weight [N / 16, K / 2, 16, 2]");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && weight.scalar_type() == at::kBFloat16,
              "linear_bf16 takes bfloat16 inputs and weights");
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu() && weight.is_contiguous(), "CPU tensors");
  TORCH_CHECK(x.size(1) == 2 * weight.size(1), "x has ", x.size(1), " inputs, the weight ", 2 * weight.size(1));
  const at::Tensor xc = x.contiguous();
  const int64_t M = xc.size(0), pairs = weight.size(1), groups = weight.size(0), N = 16 * groups;
  at::Tensor out = at::empty({M, N}, xc.options());
  if (M == 0) return out;
  const auto* xp = reinterpret_cast<const uint32_t*>(xc.data_ptr());
  const auto* wp = reinterpret_cast<const uint32_t*>(weight.data_ptr());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());
  const int64_t tiles = (groups + GROUPS - 1) / GROUPS;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g0 = t * GROUPS, n = std::min<int64_t>(GROUPS, groups - g0);
      const uint32_t* w = wp + g0 * pairs * 16;
      uint16_t* o = op + g0 * 16;
      if (n == 3)
        tile<3>(M, xp, pairs, w, o, N);
      else if (n == 2)
        tile<2>(M, xp, pairs, w, o, N);
      else
        tile<1>(M, xp, pairs, w, o, N);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwick, m) { m.def("linear_bf16(Tensor x, Tensor weight) -> Tensor"); }

TORCH_LIBRARY_IMPL(qwick, CPU, m) { m.impl("linear_bf16", &linear_bf16); }
