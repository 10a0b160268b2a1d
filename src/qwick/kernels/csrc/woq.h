// Shared by woq_int8.cpp and woq_int4.cpp: weight-only int8 / int4 matmul for x86 CPUs with AVX-512 BW + VNNI,
// registered as torch ops qwick::*.
//
// Why not torch's own kernels: at batch-1 decode a matmul must stream its weights at memory speed, and
// `_weight_int8pack_mm` / `_weight_int4pack_mm_for_cpu` are compute-bound below that (numbers in
// qwick/kernels/woq.py). Here each activation row is quantized once to int16 with one scale (error ~3e-5 of
// the row's largest value, far under the weights' own quantization error) and multiplied with the weights as
// integers by vpdpwssd (32 multiply-adds per instruction).
//
// Layouts (built by qwick/quant/layout.py): rows in blocks of 4, stored step by step along K, so a block is
// one sequential 128-bytes-per-step stream:
//   int8: weight int8 [ceil(N/4), ceil(K/32), 4, 32]; w = q * scale[n], scale float32 [N].
//   int4: weight uint8 [ceil(N/4), ceil(K/64), 4, 32]; in a row's 32-byte step c, byte j holds column 64c+j in
//         its low nibble and 64c+32+j in its high one. w = q * scale[n, g] + mins[n, g], q in 0..15,
//         scale and mins float16 [N, K / G], group size G in {32, 64, 128}.
// Calls with more than kGemvMaxRows activation rows (prefill) dequantize the weight once and use at::linear
// (oneDNN, AMX where present).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <type_traits>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kRows = 4;         // output rows per block: 4 weight streams share each activation load
constexpr int64_t kMaxMBlock = 4;    // activation rows handled per pass over a row block
constexpr int64_t kKChunk = 4096;    // int8: int32 lanes flushed to float per chunk (no overflow at any K)
constexpr int64_t kGemvMaxRows = 16; // more activation rows than this: dequantize + at::linear is faster

// Software prefetch this far ahead of each 128-byte step: +10-15% DRAM streaming rate at 2 threads over the
// hardware prefetcher alone (measured 0 / 1 / 2 / 8 KiB: 1-2 KiB best).
constexpr int64_t kPrefetchBytes = 1024;

inline void prefetch_step(const void* step) {
  _mm_prefetch(static_cast<const char*>(step) + kPrefetchBytes, _MM_HINT_T0);
  _mm_prefetch(static_cast<const char*>(step) + kPrefetchBytes + 64, _MM_HINT_T0);
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// x [M, K] (any float dtype) -> int16 [M, Kp] zero-padded, one scale per row; optional per-group sums [M, K/G].
struct QuantizedRows {
  std::vector<int16_t> q;
  std::vector<float> scale;
  std::vector<float> group_sum;
  int64_t stride;
};

// Vectorised: this runs once per matmul, so at 1-2 us per weight matrix it must not cost more than a few us.
// Row m of x as float32: bfloat16 rows are widened 16 at a time, other dtypes converted by torch first.
struct FloatRows {
  at::Tensor keep;
  std::vector<float> row;
  FloatRows(const at::Tensor& x) : keep(x.scalar_type() == at::kBFloat16 ? x.contiguous() : x.to(at::kFloat).contiguous()),
                                   row(keep.scalar_type() == at::kBFloat16 ? x.size(1) : 0) {}
  const float* get(int64_t m) {
    const int64_t K = keep.size(1);
    if (keep.scalar_type() == at::kFloat) return keep.data_ptr<float>() + m * K;
    const uint16_t* src = reinterpret_cast<const uint16_t*>(keep.data_ptr<at::BFloat16>()) + m * K;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k)));
      _mm512_storeu_ps(row.data() + k, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
    }
    for (; k < K; ++k) row[k] = static_cast<float>(c10::BFloat16(src[k], c10::BFloat16::from_bits()));
    return row.data();
  }
};

QuantizedRows quantize_rows(const at::Tensor& x, int64_t pad, int64_t group) {
  FloatRows rows(x);
  const int64_t M = x.size(0), K = x.size(1);
  QuantizedRows out;
  out.stride = round_up(K, pad);
  out.q.assign(M * out.stride, 0);
  out.scale.resize(M);
  if (group > 0) out.group_sum.assign(M * (K / group), 0.f);
  const int64_t tail = K % 16;
  const __mmask16 tail_mask = (1u << tail) - 1u;
  for (int64_t m = 0; m < M; ++m) {
    const float* row = rows.get(m);
    __m512 amax = _mm512_setzero_ps();
    for (int64_t k = 0; k + 16 <= K; k += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(row + k)));
    if (tail) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask, row + K - tail)));
    const float peak = _mm512_reduce_max_ps(amax);
    const float scale = peak > 0.f ? peak / 32767.f : 1.f;
    const __m512 inv = _mm512_set1_ps(1.f / scale);
    int16_t* dst = out.q.data() + m * out.stride;
    for (int64_t k = 0; k + 16 <= K; k += 16)  // round to nearest even, then narrow (values fit in int16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k),
                          _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(row + k), inv))));
    if (tail) {
      const __m512 v = _mm512_maskz_loadu_ps(tail_mask, row + K - tail);
      _mm256_mask_storeu_epi16(dst + K - tail, tail_mask, _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv))));
    }
    out.scale[m] = scale;
    if (group > 0) {  // group sizes are multiples of 16
      float* sums = out.group_sum.data() + m * (K / group);
      for (int64_t g = 0; g < K / group; ++g) {
        __m512 acc = _mm512_setzero_ps();
        for (int64_t k = g * group; k < (g + 1) * group; k += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(row + k));
        sums[g] = _mm512_reduce_add_ps(acc);
      }
    }
  }
  return out;
}

// float16 [count] -> float32, 16 at a time (a scalar at::Half conversion per group costs more than the group)
void half_to_float(const at::Half* src, float* dst, int64_t count) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  if (i < count) {
    const __mmask16 mask = (1u << (count - i)) - 1u;
    _mm512_mask_storeu_ps(dst + i, mask, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, src + i)));
  }
}

template <typename Fn>
void for_row_blocks(int64_t M, Fn&& fn) {  // activation rows in blocks of 4, then the remainder
  int64_t m = 0;
  for (; m + kMaxMBlock <= M; m += kMaxMBlock) fn(m, std::integral_constant<int, 4>{});
  if (M - m >= 2) fn(m, std::integral_constant<int, 2>{}), m += 2;
  if (M - m == 1) fn(m, std::integral_constant<int, 1>{});
}

void check_input(const at::Tensor& x, int64_t K) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.size(1) == K, "qwick woq: x must be a CPU [M, ", K,
              "] tensor, got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "qwick woq: x must be floating point, got ", x.scalar_type());
}

at::Tensor finish(const at::Tensor& out, const at::Tensor& x, std::optional<at::ScalarType> out_dtype) {
  return out.to(out_dtype.value_or(x.scalar_type()));
}

// The output [M, N] in the wanted dtype, filled by fill(Out*) directly for float32 and bfloat16.
template <typename Fn>
at::Tensor matvec_output(const at::Tensor& x, int64_t N, std::optional<at::ScalarType> out_dtype, Fn&& fill) {
  const at::ScalarType dtype = out_dtype.value_or(x.scalar_type());
  const at::ScalarType direct = dtype == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
  at::Tensor out = at::empty({x.size(0), N}, x.options().dtype(direct));
  if (direct == at::kBFloat16) fill(out.data_ptr<at::BFloat16>());
  else fill(out.data_ptr<float>());
  return out.scalar_type() == dtype ? out : out.to(dtype);
}

// 16 floats -> bfloat16, round to nearest even (integer ops: AVX512_BF16 is not required)
inline __m256i float_to_bf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
}

// Store 16 values at columns [col, col + 16) of a row of K, dropping the columns >= K.
template <typename T>
inline void store16(T* row, int64_t col, int64_t K, __m512 v) {
  if (col >= K) return;
  const __mmask16 mask = K - col >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - col)) - 1u);
  if constexpr (std::is_same_v<T, float>) _mm512_mask_storeu_ps(row + col, mask, v);
  else _mm256_mask_storeu_epi16(row + col, mask, float_to_bf16(v));
}

// Dequantize into a new [N, K] tensor of `dtype` (float32 and bfloat16 directly, others through float32).
template <typename Fn>
at::Tensor dequantize_as(int64_t N, int64_t K, at::ScalarType dtype, Fn&& fill) {
  const at::ScalarType direct = dtype == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
  at::Tensor out = at::empty({N, K}, at::TensorOptions().dtype(direct));
  if (direct == at::kBFloat16) fill(reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()));
  else fill(out.data_ptr<float>());
  return out.to(dtype);
}

int64_t blocks_of(int64_t N) { return (N + kRows - 1) / kRows; }

}  // namespace
