// Weight-only int8 / int4 matmul for x86 CPUs with AVX-512 BW + VNNI, registered as torch ops qwick::*.
//
// Why not torch's own kernels: at batch-1 decode a matmul must stream its weights at memory speed, and
// `_weight_int8pack_mm` / `_weight_int4pack_mm_for_cpu` are compute-bound below that (numbers in
// qwick/quant/kernels.py). Here each activation row is quantized once to int16 with one scale (error ~3e-5 of
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

// acc[r][m] = sum_k w[n0 + r, k] * xq[m0 + m, k], unscaled. `w` points at one row block: [Kp/32, kRows, 32].
template <int MB>
void int8_block(const int8_t* w, int64_t Kp, const QuantizedRows& x, int64_t m0, float acc[kRows][MB]) {
  for (int r = 0; r < kRows; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m] = 0.f;
  for (int64_t c0 = 0; c0 < Kp; c0 += kKChunk) {
    const int64_t c1 = std::min(Kp, c0 + kKChunk);
    __m512i sum[kRows][MB];
    for (int r = 0; r < kRows; ++r)
      for (int m = 0; m < MB; ++m) sum[r][m] = _mm512_setzero_si512();
    for (int64_t k = c0; k < c1; k += 32) {
      __m512i xv[MB];
      for (int m = 0; m < MB; ++m) xv[m] = _mm512_loadu_si512(x.q.data() + (m0 + m) * x.stride + k);
      const int8_t* step = w + k * kRows;  // the block's 4 rows x 32 columns: one sequential 128-byte read
      prefetch_step(step);
      for (int r = 0; r < kRows; ++r) {
        const __m512i wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + r * 32)));
        for (int m = 0; m < MB; ++m) sum[r][m] = _mm512_dpwssd_epi32(sum[r][m], wv, xv[m]);
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int m = 0; m < MB; ++m) acc[r][m] += static_cast<float>(_mm512_reduce_add_epi32(sum[r][m]));
  }
}

template <int MB, typename Out>
void int8_gemv(const int8_t* w, const float* wscale, int64_t N, int64_t K, const QuantizedRows& x, int64_t m0,
               Out* out) {
  const int64_t Kp = round_up(K, 32);
  at::parallel_for(0, (N + kRows - 1) / kRows, 16, [&](int64_t b0, int64_t b1) {
    float acc[kRows][MB];
    for (int64_t b = b0; b < b1; ++b) {
      int8_block<MB>(w + b * kRows * Kp, Kp, x, m0, acc);
      for (int64_t r = 0; r < std::min(kRows, N - b * kRows); ++r) {
        const int64_t n = b * kRows + r;
        for (int m = 0; m < MB; ++m) out[(m0 + m) * N + n] = static_cast<Out>(acc[r][m] * x.scale[m0 + m] * wscale[n]);
      }
    }
  });
}

// One row block of int4 weights ([Kp/64, kRows, 32] bytes); scale/min already float, [rows][groups].
template <int MB, int G, typename Out>
void int4_block(const uint8_t* w, int64_t Kp, int64_t groups, const float* scale, const float* min, int64_t rows,
                const QuantizedRows& x, int64_t m0, Out* out, int64_t N, int64_t n0) {
  const __m512i low_nibble = _mm512_set1_epi16(0x0F);
  __m512 accf[kRows][MB];
  __m512i acci[kRows][MB];
  for (int r = 0; r < kRows; ++r)
    for (int m = 0; m < MB; ++m) accf[r][m] = _mm512_setzero_ps(), acci[r][m] = _mm512_setzero_si512();
  for (int64_t c = 0; c < Kp / 64; ++c) {
    __m512i xlo[MB], xhi[MB];
    for (int m = 0; m < MB; ++m) {
      const int16_t* xr = x.q.data() + (m0 + m) * x.stride + c * 64;
      xlo[m] = _mm512_loadu_si512(xr);
      xhi[m] = _mm512_loadu_si512(xr + 32);
    }
    const uint8_t* step = w + c * kRows * 32;  // 4 rows x 64 elements: one sequential 128-byte read
    prefetch_step(step);
    for (int r = 0; r < kRows; ++r) {
      const __m512i bytes = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + r * 32)));
      const __m512i lo = _mm512_and_si512(bytes, low_nibble);  // elements c*64 + 0..31
      const __m512i hi = _mm512_srli_epi16(bytes, 4);           // elements c*64 + 32..63
      const int64_t sr = std::min<int64_t>(r, rows - 1) * groups;  // padding rows reuse a real row's scales
      if constexpr (G == 32) {  // each half is a whole group
        const int64_t g = 2 * c;
        const __m512 s0 = _mm512_set1_ps(scale[sr + g]);
        for (int m = 0; m < MB; ++m) {
          const __m512i p0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), lo, xlo[m]);
          accf[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), s0, accf[r][m]);
        }
        if (g + 1 < groups) {  // else: the zero padding of a K % 64 == 32 row
          const __m512 s1 = _mm512_set1_ps(scale[sr + g + 1]);
          for (int m = 0; m < MB; ++m) {
            const __m512i p1 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), hi, xhi[m]);
            accf[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), s1, accf[r][m]);
          }
        }
      } else {
        for (int m = 0; m < MB; ++m) acci[r][m] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(acci[r][m], lo, xlo[m]), hi, xhi[m]);
        if (((c + 1) * 64) % G == 0) {
          const __m512 s = _mm512_set1_ps(scale[sr + (c * 64) / G]);
          for (int m = 0; m < MB; ++m) {
            accf[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acci[r][m]), s, accf[r][m]);
            acci[r][m] = _mm512_setzero_si512();
          }
        }
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int m = 0; m < MB; ++m) {
      // sum_g min[g] * sum_{k in g} x[k]: the "+ min" part of every weight
      const float* sums = x.group_sum.data() + (m0 + m) * groups;
      __m512 offset = _mm512_setzero_ps();
      int64_t g = 0;
      for (; g + 16 <= groups; g += 16)
        offset = _mm512_fmadd_ps(_mm512_loadu_ps(min + r * groups + g), _mm512_loadu_ps(sums + g), offset);
      if (g < groups) {
        const __mmask16 mask = (1u << (groups - g)) - 1u;
        offset = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, min + r * groups + g), _mm512_maskz_loadu_ps(mask, sums + g), offset);
      }
      out[(m0 + m) * N + n0 + r] =
          static_cast<Out>(_mm512_reduce_add_ps(accf[r][m]) * x.scale[m0 + m] + _mm512_reduce_add_ps(offset));
    }
  }
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

template <int MB, int G, typename Out>
void int4_gemv(const uint8_t* w, const at::Half* scale16, const at::Half* min16, int64_t N, int64_t K,
               const QuantizedRows& x, int64_t m0, Out* out) {
  const int64_t Kp = round_up(K, 64), groups = K / G;
  at::parallel_for(0, (N + kRows - 1) / kRows, 16, [&](int64_t b0, int64_t b1) {
    std::vector<float> scale(kRows * groups), min(kRows * groups);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n0 = b * kRows, rows = std::min(kRows, N - n0);
      half_to_float(scale16 + n0 * groups, scale.data(), rows * groups);
      half_to_float(min16 + n0 * groups, min.data(), rows * groups);
      int4_block<MB, G, Out>(w + b * kRows * Kp / 2, Kp, groups, scale.data(), min.data(), rows, x, m0, out, N, n0);
    }
  });
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

}  // namespace

namespace {

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

template <typename T>
void int8_dequantize_into(const int8_t* w, const float* scale, int64_t N, int64_t K, T* dst) {
  const int64_t Kp = round_up(K, 32);
  at::parallel_for(0, (N + kRows - 1) / kRows, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t r = 0; r < std::min(kRows, N - b * kRows); ++r) {
        const int64_t n = b * kRows + r;
        const __m512 s = _mm512_set1_ps(scale[n]);
        for (int64_t c = 0; c < Kp / 32; ++c) {
          const int8_t* src = w + (b * Kp / 32 + c) * kRows * 32 + r * 32;
          for (int half = 0; half < 2; ++half) {
            const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + half * 16)));
            store16(dst + n * K, c * 32 + half * 16, K, _mm512_mul_ps(_mm512_cvtepi32_ps(q), s));
          }
        }
      }
    }
  });
}

template <typename T>
void int4_dequantize_into(const uint8_t* w, const at::Half* scale16, const at::Half* min16, int64_t N, int64_t K,
                          int64_t G, T* dst) {
  const int64_t Kp = round_up(K, 64), groups = K / G;
  const __m512i low_nibble = _mm512_set1_epi32(0x0F);
  at::parallel_for(0, (N + kRows - 1) / kRows, 16, [&](int64_t b0, int64_t b1) {
    std::vector<float> scale(groups), min(groups);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t r = 0; r < std::min(kRows, N - b * kRows); ++r) {
        const int64_t n = b * kRows + r;
        half_to_float(scale16 + n * groups, scale.data(), groups);
        half_to_float(min16 + n * groups, min.data(), groups);
        for (int64_t c = 0; c < Kp / 64; ++c) {
          const uint8_t* src = w + (b * Kp / 64 + c) * kRows * 32 + r * 32;
          for (int half = 0; half < 2; ++half) {  // bytes 16*half.. hold columns 16*half.. and 32 + 16*half..
            const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + half * 16)));
            const int64_t col_lo = c * 64 + half * 16, col_hi = col_lo + 32;
            const int64_t g_lo = std::min(col_lo / G, groups - 1), g_hi = std::min(col_hi / G, groups - 1);
            const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, low_nibble));
            const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4));
            store16(dst + n * K, col_lo, K, _mm512_fmadd_ps(lo, _mm512_set1_ps(scale[g_lo]), _mm512_set1_ps(min[g_lo])));
            store16(dst + n * K, col_hi, K, _mm512_fmadd_ps(hi, _mm512_set1_ps(scale[g_hi]), _mm512_set1_ps(min[g_hi])));
          }
        }
      }
    }
  });
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

at::Tensor int8_dequantize(const at::Tensor& w, const at::Tensor& scale, int64_t K, at::ScalarType dtype) {
  const int64_t N = scale.numel();
  TORCH_CHECK(w.scalar_type() == at::kChar && w.is_contiguous() && w.numel() == blocks_of(N) * kRows * round_up(K, 32) &&
              scale.scalar_type() == at::kFloat, "qwick int8: weight int8 [ceil(N/4), ceil(K/32), 4, 32], scale float32 [N]");
  return dequantize_as(N, K, dtype, [&](auto* dst) { int8_dequantize_into(w.data_ptr<int8_t>(), scale.data_ptr<float>(), N, K, dst); });
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale,
                       std::optional<at::ScalarType> out_dtype) {
  const int64_t N = scale.numel(), M = x.size(0), K = x.size(1);
  check_input(x, K);
  if (M > kGemvMaxRows) return finish(at::linear(x, int8_dequantize(w, scale, K, x.scalar_type())), x, out_dtype);
  TORCH_CHECK(w.scalar_type() == at::kChar && w.is_contiguous() && w.numel() == blocks_of(N) * kRows * round_up(K, 32) &&
              scale.scalar_type() == at::kFloat, "qwick int8: weight int8 [ceil(N/4), ceil(K/32), 4, 32], scale float32 [N]");
  const QuantizedRows xq = quantize_rows(x, 32, 0);
  return matvec_output(x, N, out_dtype, [&](auto* out) {
    for_row_blocks(M, [&](int64_t m0, auto mb) {
      int8_gemv<decltype(mb)::value>(w.data_ptr<int8_t>(), scale.data_ptr<float>(), N, K, xq, m0, out);
    });
  });
}

namespace {
void check_int4(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& min, int64_t group, int64_t K) {
  const int64_t N = scale.size(0);
  TORCH_CHECK(group == 32 || group == 64 || group == 128, "qwick int4: group size 32, 64 or 128, got ", group);
  TORCH_CHECK(K % group == 0, "qwick int4: group size ", group, " does not divide in_features ", K);
  TORCH_CHECK(w.scalar_type() == at::kByte && w.is_contiguous() && w.numel() == blocks_of(N) * kRows * round_up(K, 64) / 2,
              "qwick int4: weight uint8 [ceil(N/4), ceil(K/64), 4, 32] for N = ", N, ", K = ", K);
  TORCH_CHECK(scale.scalar_type() == at::kHalf && min.scalar_type() == at::kHalf && scale.is_contiguous() &&
              min.is_contiguous() && scale.dim() == 2 && scale.size(1) == K / group && min.sizes() == scale.sizes(),
              "qwick int4: scale and min float16 [N, K / group]");
}
}  // namespace

at::Tensor int4_dequantize(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& min, int64_t group,
                           int64_t K, at::ScalarType dtype) {
  check_int4(w, scale, min, group, K);
  return dequantize_as(scale.size(0), K, dtype, [&](auto* dst) {
    int4_dequantize_into(w.data_ptr<uint8_t>(), scale.data_ptr<at::Half>(), min.data_ptr<at::Half>(), scale.size(0), K, group, dst);
  });
}

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, const at::Tensor& min,
                       int64_t group, std::optional<at::ScalarType> out_dtype) {
  const int64_t N = scale.size(0), M = x.size(0), K = x.size(1);
  check_input(x, K);
  check_int4(w, scale, min, group, K);
  if (M > kGemvMaxRows) {
    return finish(at::linear(x, int4_dequantize(w, scale, min, group, K, x.scalar_type())), x, out_dtype);
  }
  const QuantizedRows xq = quantize_rows(x, 64, group);
  const auto* wp = w.data_ptr<uint8_t>();
  const auto* sp = scale.data_ptr<at::Half>();
  const auto* mp = min.data_ptr<at::Half>();
  return matvec_output(x, N, out_dtype, [&](auto* o) {
    using Out = std::remove_pointer_t<decltype(o)>;
    for_row_blocks(M, [&](int64_t m0, auto mb) {
      constexpr int MB = decltype(mb)::value;
      if (group == 32) int4_gemv<MB, 32, Out>(wp, sp, mp, N, K, xq, m0, o);
      else if (group == 64) int4_gemv<MB, 64, Out>(wp, sp, mp, N, K, xq, m0, o);
      else int4_gemv<MB, 128, Out>(wp, sp, mp, N, K, xq, m0, o);
    });
  });
}

TORCH_LIBRARY(qwick, m) {
  m.def("int8_linear(Tensor x, Tensor weight, Tensor scale, ScalarType? out_dtype=None) -> Tensor");
  m.def("int8_dequantize(Tensor weight, Tensor scale, int in_features, ScalarType dtype) -> Tensor");
  m.def("int4_linear(Tensor x, Tensor weight, Tensor scale, Tensor mins, int group_size, "
        "ScalarType? out_dtype=None) -> Tensor");
  m.def("int4_dequantize(Tensor weight, Tensor scale, Tensor mins, int group_size, int in_features, "
        "ScalarType dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwick, CPU, m) {
  m.impl("int8_linear", &int8_linear);
  m.impl("int8_dequantize", &int8_dequantize);
  m.impl("int4_linear", &int4_linear);
  m.impl("int4_dequantize", &int4_dequantize);
}
