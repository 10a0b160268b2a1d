// Weight-only int4 (group-wise) matmul and dequantization (layout and why: woq.h).

#include "woq.h"

namespace {

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

TORCH_LIBRARY_FRAGMENT(qwick, m) {
  m.def("int4_linear(Tensor x, Tensor weight, Tensor scale, Tensor mins, int group_size, "
        "ScalarType? out_dtype=None) -> Tensor");
  m.def("int4_dequantize(Tensor weight, Tensor scale, Tensor mins, int group_size, int in_features, "
        "ScalarType dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwick, CPU, m) {
  m.impl("int4_linear", &int4_linear);
  m.impl("int4_dequantize", &int4_dequantize);
}
