// Decode attention on CPU straight from the paged KV cache, registered as the torch op qwick::paged_decode.
//
// Why: the portable path gathers every row's context keys and values into a dense [B, kv_heads, S, D] copy per
// layer, then SDPA reads that copy again; at batch 32 and a few hundred tokens of context that is ~3x the
// cache's bytes moved per layer, as much traffic as the weights themselves. Here each (row, kv head) task reads
// its keys once (scores for all query heads of its GQA group), takes an exact softmax, and reads its values once.
//
// Shapes: q [B, Hq, D]; key_cache, value_cache [slots, Hkv, D] (the cache's per-layer tensors, q's dtype or
// float8 e4m3fn: an fp8 KV cache, widened here as it is read);
// block_tables [B, W] int64 (physical block of each logical block); context_lens [B] int64 (positions
// 0..len-1 are attended); out [B, Hq, D] in q's dtype. Slot of position p: table[p / bs] * bs + p % bs.
// Vectorised (AVX-512F) when D % 16 == 0 for bfloat16 and float32; a scalar loop otherwise (tiny test models).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "simd.h"

namespace {

using qwick::exp16;
using qwick::load16;
using qwick::store16;

// scores[0..n) <- exp(scores - max); returns their sum.
float softmax_numerators(float* scores, int64_t n) {
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(scores + i));
  float mx = _mm512_reduce_max_ps(vmax);
  for (; i < n; ++i) mx = std::max(mx, scores[i]);
  __m512 vsum = _mm512_setzero_ps();
  const __m512 vmx = _mm512_set1_ps(mx);
  for (i = 0; i + 16 <= n; i += 16) {
    __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + i), vmx));
    _mm512_storeu_ps(scores + i, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  float sum = _mm512_reduce_add_ps(vsum);
  for (; i < n; ++i) {
    scores[i] = std::exp(scores[i] - mx);
    sum += scores[i];
  }
  return sum;
}

struct Task {
  int64_t len, group, dim, kv_heads, block_size;
  const int64_t* table;
  float scale;
  int64_t slot(int64_t p) const { return table[p / block_size] * block_size + p % block_size; }
};

// One row, kv heads [h0, h1): queries q[(h1 - h0) * group][dim] (those heads' rows of q, contiguous). Positions
// are the outer loop so each position's keys (then values) of all these heads are read as one contiguous run
// (slot * kv_heads + h): consecutive positions of a block are then sequential in memory, which the hardware
// prefetcher follows; a head-major order strides 2 KB between reads and ran ~1.6x slower at batch 32.
template <typename T, typename KV>
void attend_vectorised(const Task& t, const T* q, const KV* keys, const KV* values, int64_t h0, int64_t h1, T* out,
                       std::vector<float>& scores, std::vector<float>& acc, std::vector<float>& qf) {
  const int64_t G = t.group, D = t.dim, L = t.len, C = D / 16, Q = (h1 - h0) * G;
  scores.resize(Q * L);
  acc.assign(Q * D, 0.0f);
  qf.resize(Q * D);
  const __m512 vscale = _mm512_set1_ps(t.scale);
  for (int64_t i = 0; i < Q * C; ++i) _mm512_storeu_ps(qf.data() + 16 * i, _mm512_mul_ps(load16(q + 16 * i), vscale));
  for (int64_t p = 0; p < L; ++p) {
    const KV* row = keys + (t.slot(p) * t.kv_heads + h0) * D;
    for (int64_t i = 0; i < Q; ++i) {
      const KV* k = row + (i / G) * D;
      const float* qi = qf.data() + i * D;
      __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();  // two chains: FMA latency, not throughput
      int64_t c = 0;
      for (; c + 2 <= C; c += 2) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(qi + 16 * c), load16(k + 16 * c), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(qi + 16 * c + 16), load16(k + 16 * c + 16), s1);
      }
      if (c < C) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(qi + 16 * c), load16(k + 16 * c), s0);
      scores[i * L + p] = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    }
  }
  std::vector<float> inv(Q);
  for (int64_t i = 0; i < Q; ++i) inv[i] = 1.0f / softmax_numerators(scores.data() + i * L, L);
  for (int64_t p = 0; p < L; ++p) {
    const KV* row = values + (t.slot(p) * t.kv_heads + h0) * D;
    for (int64_t i = 0; i < Q; ++i) {
      const KV* v = row + (i / G) * D;
      const __m512 w = _mm512_set1_ps(scores[i * L + p]);
      float* a = acc.data() + i * D;
      for (int64_t c = 0; c < C; ++c)
        _mm512_storeu_ps(a + 16 * c, _mm512_fmadd_ps(w, load16(v + 16 * c), _mm512_loadu_ps(a + 16 * c)));
    }
  }
  for (int64_t i = 0; i < Q; ++i)
    for (int64_t c = 0; c < C; ++c)
      store16(out + i * D + 16 * c, _mm512_mul_ps(_mm512_loadu_ps(acc.data() + i * D + 16 * c), _mm512_set1_ps(inv[i])));
}

// The common shapes (D = 128: every Qwen3 size; query heads per kv head G <= 4), with the queries and the
// output accumulators of one kv head held in registers across a whole block of positions: ~2x fewer
// instructions than attend_vectorised, whose per-position loads and stores of the accumulators made it
// compute-bound at batch 16-32. Loop order: block, then kv head, then position; a block's keys (or values) of
// all heads are one contiguous 2 KB-per-position run, so they stay in L1 while the heads take turns.
template <typename T, typename KV, int C, int G>
void attend_blocked(const Task& t, const T* q, const KV* keys, const KV* values, int64_t h0, int64_t h1, T* out,
                    std::vector<float>& scores, std::vector<float>& acc, std::vector<float>& qf) {
  constexpr int64_t D = 16 * C;
  const int64_t L = t.len, bs = t.block_size, nh = h1 - h0, Q = nh * G;
  scores.resize(Q * L);
  acc.assign(Q * D, 0.0f);
  qf.resize(Q * D);
  const __m512 vscale = _mm512_set1_ps(t.scale);
  for (int64_t i = 0; i < Q * C; ++i) _mm512_storeu_ps(qf.data() + 16 * i, _mm512_mul_ps(load16(q + 16 * i), vscale));
  for (int64_t p0 = 0; p0 < L; p0 += bs) {
    const int64_t n = std::min(bs, L - p0);
    const KV* block = keys + t.table[p0 / bs] * bs * t.kv_heads * D;
    for (int64_t hh = 0; hh < nh; ++hh) {
      __m512 qv[G][C];
      for (int g = 0; g < G; ++g)
        for (int c = 0; c < C; ++c) qv[g][c] = _mm512_loadu_ps(qf.data() + (hh * G + g) * D + 16 * c);
      for (int64_t j = 0; j < n; ++j) {
        const KV* k = block + (j * t.kv_heads + h0 + hh) * D;
        __m512 kv[C];
        for (int c = 0; c < C; ++c) kv[c] = load16(k + 16 * c);
        for (int g = 0; g < G; ++g) {
          __m512 s0 = _mm512_mul_ps(qv[g][0], kv[0]), s1 = _mm512_mul_ps(qv[g][1], kv[1]);
          for (int c = 2; c + 1 < C; c += 2) {
            s0 = _mm512_fmadd_ps(qv[g][c], kv[c], s0);
            s1 = _mm512_fmadd_ps(qv[g][c + 1], kv[c + 1], s1);
          }
          scores[(hh * G + g) * L + p0 + j] = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
        }
      }
    }
  }
  std::vector<float> inv(Q);
  for (int64_t i = 0; i < Q; ++i) inv[i] = 1.0f / softmax_numerators(scores.data() + i * L, L);
  for (int64_t p0 = 0; p0 < L; p0 += bs) {
    const int64_t n = std::min(bs, L - p0);
    const KV* block = values + t.table[p0 / bs] * bs * t.kv_heads * D;
    for (int64_t hh = 0; hh < nh; ++hh) {
      __m512 a[G][C];
      for (int g = 0; g < G; ++g)
        for (int c = 0; c < C; ++c) a[g][c] = _mm512_loadu_ps(acc.data() + (hh * G + g) * D + 16 * c);
      for (int64_t j = 0; j < n; ++j) {
        const KV* v = block + (j * t.kv_heads + h0 + hh) * D;
        __m512 w[G];
        for (int g = 0; g < G; ++g) w[g] = _mm512_set1_ps(scores[(hh * G + g) * L + p0 + j]);
        for (int c = 0; c < C; ++c) {
          const __m512 vv = load16(v + 16 * c);
          for (int g = 0; g < G; ++g) a[g][c] = _mm512_fmadd_ps(w[g], vv, a[g][c]);
        }
      }
      for (int g = 0; g < G; ++g)
        for (int c = 0; c < C; ++c) _mm512_storeu_ps(acc.data() + (hh * G + g) * D + 16 * c, a[g][c]);
    }
  }
  for (int64_t i = 0; i < Q; ++i)
    for (int64_t c = 0; c < C; ++c)
      store16(out + i * D + 16 * c, _mm512_mul_ps(_mm512_loadu_ps(acc.data() + i * D + 16 * c), _mm512_set1_ps(inv[i])));
}

template <typename T, typename KV>
void attend_scalar(const Task& t, const T* q, const KV* keys, const KV* values, int64_t h0, int64_t h1, T* out,
                   std::vector<float>& scores, std::vector<float>& acc) {
  const int64_t G = t.group, D = t.dim, L = t.len, Q = (h1 - h0) * G;
  scores.resize(Q * L);
  acc.assign(Q * D, 0.0f);
  for (int64_t p = 0; p < L; ++p) {
    const KV* row = keys + (t.slot(p) * t.kv_heads + h0) * D;
    for (int64_t i = 0; i < Q; ++i) {
      const KV* k = row + (i / G) * D;
      float s = 0.0f;
      for (int64_t d = 0; d < D; ++d) s += static_cast<float>(q[i * D + d]) * static_cast<float>(k[d]);
      scores[i * L + p] = s * t.scale;
    }
  }
  for (int64_t i = 0; i < Q; ++i) {
    float* s = scores.data() + i * L;
    const float mx = *std::max_element(s, s + L);
    float sum = 0.0f;
    for (int64_t p = 0; p < L; ++p) sum += (s[p] = std::exp(s[p] - mx));
    for (int64_t p = 0; p < L; ++p) s[p] /= sum;
  }
  for (int64_t p = 0; p < L; ++p) {
    const KV* row = values + (t.slot(p) * t.kv_heads + h0) * D;
    for (int64_t i = 0; i < Q; ++i) {
      const KV* v = row + (i / G) * D;
      for (int64_t d = 0; d < D; ++d) acc[i * D + d] += scores[i * L + p] * static_cast<float>(v[d]);
    }
  }
  for (int64_t i = 0; i < Q * D; ++i) out[i] = static_cast<T>(acc[i]);
}

template <typename T, typename KV>
void run(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& tables,
         const at::Tensor& lens, int64_t block_size, double scale, at::Tensor& out) {
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = keys.size(1), W = tables.size(1);
  const int64_t G = Hq / Hkv;
  const bool vectorised = D % 16 == 0;
  const T* qp = q.data_ptr<T>();
  const KV* kp = keys.data_ptr<KV>();
  const KV* vp = values.data_ptr<KV>();
  const int64_t* tp = tables.data_ptr<int64_t>();
  const int64_t* lp = lens.data_ptr<int64_t>();
  T* op = out.data_ptr<T>();
  // Work items are (row, kv head), split into contiguous ranges per thread; each range is handled row by row,
  // all of its heads of that row together (see attend_vectorised for why).
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, acc, qf;
    for (int64_t i = begin; i < end;) {
      const int64_t b = i / Hkv, h0 = i % Hkv, h1 = std::min(Hkv, h0 + (end - i));
      const Task t{lp[b], G, D, Hkv, block_size, tp + b * W, static_cast<float>(scale)};
      const T* qrow = qp + (b * Hq + h0 * G) * D;  // query heads h*G .. h*G+G-1 share kv head h
      T* orow = op + (b * Hq + h0 * G) * D;
      if (D == 128 && G == 1)
        attend_blocked<T, KV, 8, 1>(t, qrow, kp, vp, h0, h1, orow, scores, acc, qf);
      else if (D == 128 && G == 2)
        attend_blocked<T, KV, 8, 2>(t, qrow, kp, vp, h0, h1, orow, scores, acc, qf);
      else if (D == 128 && G == 4)
        attend_blocked<T, KV, 8, 4>(t, qrow, kp, vp, h0, h1, orow, scores, acc, qf);
      else if (vectorised)
        attend_vectorised(t, qrow, kp, vp, h0, h1, orow, scores, acc, qf);
      else
        attend_scalar(t, qrow, kp, vp, h0, h1, orow, scores, acc);
      i += h1 - h0;
    }
  });
}

at::Tensor paged_decode(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                        const at::Tensor& block_tables, const at::Tensor& context_lens, int64_t block_size,
                        double scale) {
  TORCH_CHECK(q.dim() == 3 && key_cache.dim() == 3 && value_cache.dim() == 3, "q [B, Hq, D], caches [slots, Hkv, D]");
  TORCH_CHECK(q.device().is_cpu() && key_cache.device().is_cpu(), "paged_decode runs on CPU tensors");
  const bool fp8 = key_cache.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK(key_cache.scalar_type() == value_cache.scalar_type() && (fp8 || key_cache.scalar_type() == q.scalar_type()),
              "the caches must share q's dtype or both be float8_e4m3fn");
  TORCH_CHECK(key_cache.sizes() == value_cache.sizes() && key_cache.size(2) == q.size(2), "cache shapes differ");
  TORCH_CHECK(q.size(1) % key_cache.size(1) == 0, "query heads must be a multiple of kv heads");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && context_lens.scalar_type() == at::kLong,
              "block_tables and context_lens are int64");
  TORCH_CHECK(block_tables.size(0) == q.size(0) && context_lens.size(0) == q.size(0), "one table and length per row");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "caches must be contiguous");
  at::Tensor qc = q.contiguous(), tables = block_tables.contiguous(), lens = context_lens.contiguous();
  // a plain loop over B lengths: tensor max()/min() here cost two op dispatches per layer on the hot path
  const int64_t* lp = lens.data_ptr<int64_t>();
  for (int64_t b = 0; b < lens.numel(); ++b)
    TORCH_CHECK(lp[b] >= 1 && lp[b] <= block_tables.size(1) * block_size, "context_lens out of the block tables");
  at::Tensor out = at::empty_like(qc);
  if (q.scalar_type() == at::kBFloat16 && fp8)
    run<at::BFloat16, c10::Float8_e4m3fn>(qc, key_cache, value_cache, tables, lens, block_size, scale, out);
  else if (q.scalar_type() == at::kFloat && fp8)
    run<float, c10::Float8_e4m3fn>(qc, key_cache, value_cache, tables, lens, block_size, scale, out);
  else if (q.scalar_type() == at::kBFloat16)
    run<at::BFloat16, at::BFloat16>(qc, key_cache, value_cache, tables, lens, block_size, scale, out);
  else if (q.scalar_type() == at::kFloat)
    run<float, float>(qc, key_cache, value_cache, tables, lens, block_size, scale, out);
  else
    TORCH_CHECK(false, "paged_decode supports bfloat16 and float32, got ", q.scalar_type());
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwick, m) {
  m.def("paged_decode(Tensor q, Tensor key_cache, Tensor value_cache, Tensor block_tables, Tensor context_lens, "
        "int block_size, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwick, CPU, m) { m.impl("paged_decode", &paged_decode); }
