// RMSNorm and RMSNorm + rotary embedding as single CPU ops (qwick::rms_norm, qwick::qk_norm_rope).
//
// Why: at decode the activations are tiny and each layer's norms and rotary embedding are ~25 small torch ops
// (float casts, pow, mean, rsqrt, cat, neg, ...), ~7 us of dispatch each: ~5-10 ms of a 0.6B decode step. These
// ops compute the same float32 math with the same bfloat16 roundings as the torch code in qwen3.py/rope.py
// (so transformers' parity holds); only the order of the mean's sum differs.
//
// rms_norm(x [..., D], weight [D], eps): y = round(x * 1/sqrt(mean(x^2) + eps)); out = round(weight * y).
// qk_norm_rope(x [N, H, D], weight [D], eps, cos [N, D], sin [N, D]): y = rms_norm(x) per head, then
//   out = round(round(y * cos) + round(rotate_half(y) * sin)), rotate_half(y) = cat(-y[D/2:], y[:D/2]).
// round() is to x's dtype (bfloat16: nearest even; float32: none). Inputs must share a dtype, be contiguous.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "simd.h"

namespace {

using qwick::load16;
using qwick::store16;  // of values round16 already rounded: their bits are kept

// v rounded to T's precision, kept as float (bfloat16: round to nearest even; inputs are finite)
template <typename T>
inline __m512 round16(__m512 v);
template <>
inline __m512 round16<float>(__m512 v) { return v; }
template <>
inline __m512 round16<at::BFloat16>(__m512 v) {
  __m512i bits = _mm512_castps_si512(v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  bits = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  return _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}

template <typename T>
inline float round1(float v) { return static_cast<float>(static_cast<T>(v)); }

// 1 / sqrt(mean(x^2) + eps) of one row, as torch computes it (squares rounded to float, then summed)
template <typename T>
float inverse_rms(const T* x, int64_t D, float eps) {
  float sum = 0.0f;
  int64_t d = 0;
  if (D % 16 == 0) {
    __m512 acc = _mm512_setzero_ps();
    for (; d < D; d += 16) {
      __m512 v = load16(x + d);
      acc = _mm512_add_ps(acc, _mm512_mul_ps(v, v));
    }
    sum = _mm512_reduce_add_ps(acc);
  }
  for (; d < D; ++d) {
    const float v = static_cast<float>(x[d]);
    sum += v * v;
  }
  return 1.0f / std::sqrt(sum / static_cast<float>(D) + eps);
}

// y[0..D) <- round(weight * round(x * inv)) as floats
template <typename T>
void normalise_row(const T* x, const T* w, float inv, int64_t D, float* y) {
  int64_t d = 0;
  if (D % 16 == 0) {
    const __m512 vinv = _mm512_set1_ps(inv);
    for (; d < D; d += 16)
      _mm512_storeu_ps(y + d, round16<T>(_mm512_mul_ps(load16(w + d), round16<T>(_mm512_mul_ps(load16(x + d), vinv)))));
  }
  for (; d < D; ++d) y[d] = round1<T>(static_cast<float>(w[d]) * round1<T>(static_cast<float>(x[d]) * inv));
}

template <typename T>
void rms_norm_rows(const at::Tensor& x, const at::Tensor& w, double eps, at::Tensor& out) {
  const int64_t D = x.size(-1), rows = x.numel() / D;
  const T* xp = x.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, 32768 / D);  // small inputs run inline: no thread wake-up
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> y(D);
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = xp + r * D;
      normalise_row(xr, wp, inverse_rms(xr, D, static_cast<float>(eps)), D, y.data());
      T* orow = op + r * D;
      int64_t d = 0;
      if (D % 16 == 0)
        for (; d < D; d += 16) store16(orow + d, _mm512_loadu_ps(y.data() + d));
      for (; d < D; ++d) orow[d] = static_cast<T>(y[d]);
    }
  });
}

template <typename T>
void qk_norm_rope_rows(const at::Tensor& x, const at::Tensor& w, double eps, const at::Tensor& cos,
                       const at::Tensor& sin, at::Tensor& out) {
  const int64_t N = x.size(0), H = x.size(1), D = x.size(2), half = D / 2;
  const T* xp = x.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  const T* cp = cos.data_ptr<T>();
  const T* sp = sin.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, 32768 / D);
  at::parallel_for(0, N * H, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> y(D);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H;
      const T* xr = xp + r * D;
      const T* c = cp + n * D;
      const T* s = sp + n * D;
      T* o = op + r * D;
      normalise_row(xr, wp, inverse_rms(xr, D, static_cast<float>(eps)), D, y.data());
      int64_t j = 0;
      if (half % 16 == 0) {
        const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
        for (; j < half; j += 16) {
          const __m512 lo = _mm512_loadu_ps(y.data() + j), hi = _mm512_loadu_ps(y.data() + half + j);
          // first half: y_lo * cos - y_hi * sin; second half: y_hi * cos + y_lo * sin (each product rounded)
          const __m512 first = round16<T>(_mm512_add_ps(round16<T>(_mm512_mul_ps(lo, load16(c + j))),
                                                        round16<T>(_mm512_mul_ps(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(hi), sign)),
                                                                           load16(s + j)))));
          const __m512 second = round16<T>(_mm512_add_ps(round16<T>(_mm512_mul_ps(hi, load16(c + half + j))),
                                                         round16<T>(_mm512_mul_ps(lo, load16(s + half + j)))));
          store16(o + j, first);
          store16(o + half + j, second);
        }
      }
      for (; j < half; ++j) {
        const float lo = y[j], hi = y[half + j];
        o[j] = static_cast<T>(round1<T>(lo * static_cast<float>(c[j])) + round1<T>(-hi * static_cast<float>(s[j])));
        o[half + j] = static_cast<T>(round1<T>(hi * static_cast<float>(c[half + j])) +
                                     round1<T>(lo * static_cast<float>(s[half + j])));
      }
    }
  });
}

void check_common(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "qwick ops run on CPU tensors");
  TORCH_CHECK(x.scalar_type() == w.scalar_type(), "x and weight must share a dtype");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat, "bfloat16 or float32 only, got ",
              x.scalar_type());
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous(), "x and weight must be contiguous");
  TORCH_CHECK(w.dim() == 1 && x.dim() >= 1 && x.size(-1) == w.size(0), "weight [D] must match x's last dim");
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_common(x, weight);
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  if (x.scalar_type() == at::kBFloat16)
    rms_norm_rows<at::BFloat16>(x, weight, eps, out);
  else
    rms_norm_rows<float>(x, weight, eps, out);
  return out;
}

at::Tensor qk_norm_rope(const at::Tensor& x, const at::Tensor& weight, double eps, const at::Tensor& cos,
                        const at::Tensor& sin) {
  check_common(x, weight);
  TORCH_CHECK(x.dim() == 3 && x.size(2) % 2 == 0, "x is [N, heads, D] with an even D");
  TORCH_CHECK(cos.sizes() == sin.sizes() && cos.dim() == 2 && cos.size(0) == x.size(0) && cos.size(1) == x.size(2),
              "cos and sin are [N, D]");
  TORCH_CHECK(cos.scalar_type() == x.scalar_type() && sin.scalar_type() == x.scalar_type(), "cos/sin dtype differs");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous(), "cos and sin must be contiguous");
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  if (x.scalar_type() == at::kBFloat16)
    qk_norm_rope_rows<at::BFloat16>(x, weight, eps, cos, sin, out);
  else
    qk_norm_rope_rows<float>(x, weight, eps, cos, sin, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwick, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("qk_norm_rope(Tensor x, Tensor weight, float eps, Tensor cos, Tensor sin) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwick, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("qk_norm_rope", &qk_norm_rope);
}
