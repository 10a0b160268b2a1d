// Weight-only int8 matmul and dequantization (layout and why: woq.h).

#include "woq.h"

namespace {

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

TORCH_LIBRARY_FRAGMENT(qwick, m) {
  m.def("int8_linear(Tensor x, Tensor weight, Tensor scale, ScalarType? out_dtype=None) -> Tensor");
  m.def("int8_dequantize(Tensor weight, Tensor scale, int in_features, ScalarType dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwick, CPU, m) {
  m.impl("int8_linear", &int8_linear);
  m.impl("int8_dequantize", &int8_dequantize);
}
