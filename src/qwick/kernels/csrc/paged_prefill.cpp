// Prefill-chunk attention on CPU straight from the paged KV cache, registered as qwick::paged_prefill.
//
// Why: a chunk that extends a cached context (a gate request's text after its cached instruction, the later
// chunks of a long prompt) attended by SDPA over a per-layer gathered copy of its context; ATen's CPU flash
// kernel ran a 47-query x 351-key bf16 tile at ~110 GFLOP/s (1.2 ms a layer on Zen 4). Here each task (one kv
// head, a tile of up to 128 query rows) packs a chunk of keys into VNNI pairs once, takes every row's scores with
// AVX512-BF16 dot products (vdpbf16ps: bf16 x bf16 products summed in float32), runs an online softmax in float32
// and accumulates P x V two keys per instruction, the probabilities rounded to bf16 as ATen's CPU flash kernel
// does (0.4 ms for that tile). Needs AVX512-BF16 (Zen 4, Cooper Lake, Sapphire Rapids and later).
// (Decode rows stay with paged_attention.cpp: a bf16 dot-product version of it measured within 5% at batch 32,
// where reading a row's scattered context from memory, not arithmetic, sets the time.)
//
// Shapes: q [T, Hq, D] bfloat16, the chunk's tokens at positions start .. start + T - 1; key_cache, value_cache
// [slots, Hkv, D] bfloat16 holding every attended position (the chunk's own keys/values already written);
// block_table [W] int64 (physical block of each logical block); token t attends to positions 0 .. start + t.
// out [T, Hq, D] bfloat16. D % 32 == 0. Slot of position p: table[p / bs] * bs + p % bs.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "simd.h"

namespace {

using qwick::exp16;
using qwick::store16;

constexpr int64_t KEYS = 256;  // keys per step of the online softmax: 16 groups of 16 (one zmm of scores each)
constexpr int64_t ROWS = 128;  // query rows (token x query head of the kv head's group) per task, at most

// r[0..16) as rows of a 16 x 16 dword matrix -> its columns: out[c] = dword c of r[0], ..., r[15].
inline void transpose16(const __m512i r[16], __m512i out[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {  // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved, dwords 0-1 / 2-3 of each lane
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int k = 0; k < 4; ++k) {  // u[4k + m], lane L: column 4L + m of rows 4k .. 4k + 3
    u[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    u[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
  for (int m = 0; m < 4; ++m) {  // column 4L + m = lane L of u[m], u[4 + m], u[8 + m], u[12 + m]
    const __m512i v0 = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i v1 = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i w0 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i w1 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(3, 2, 3, 2));
    out[m] = _mm512_shuffle_i32x4(v0, w0, _MM_SHUFFLE(2, 0, 2, 0));
    out[4 + m] = _mm512_shuffle_i32x4(v0, w0, _MM_SHUFFLE(3, 1, 3, 1));
    out[8 + m] = _mm512_shuffle_i32x4(v1, w1, _MM_SHUFFLE(2, 0, 2, 0));
    out[12 + m] = _mm512_shuffle_i32x4(v1, w1, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

struct Cache {
  const uint16_t* keys;
  const uint16_t* values;
  const int64_t* table;
  int64_t block_size, kv_heads, dim;
  int64_t offset(int64_t position, int64_t head) const {  // element offset of (position, head, 0)
    const int64_t slot = table[position / block_size] * block_size + position % block_size;
    return (slot * kv_heads + head) * dim;
  }
};

// Per-thread scratch, reused across a thread's tasks. Dword layouts pair two bfloat16s, as vdpbf16ps reads them.
struct Scratch {
  std::vector<uint32_t> keys;    // [KEYS / 16][D / 2][16]: (g, p, j) = dims 2p, 2p+1 of key 16g + j
  std::vector<uint32_t> values;  // [KEYS / 2][D / 16][16]: (i, c, l) = dim 16c + l of keys 2i, 2i+1
  std::vector<uint16_t> q;       // [rows4][D] the task's query rows, zero rows as padding
  std::vector<float> scores;     // [rows4][KEYS] scaled scores of the current chunk
  std::vector<uint16_t> probs;   // [rows4][KEYS] the probabilities in bfloat16
  std::vector<float> acc, max, sum;  // [rows4][D] unnormalised outputs; running max and sum of each row
};

// Keys and values of positions [n0, n0 + n) of kv head h into the scratch; keys padded with zero keys to
// `groups` x 16 (their scores are computed and never used), values to an even count (probability 0).
void load_chunk(const Cache& c, int64_t h, int64_t n0, int64_t n, int64_t groups, Scratch& s) {
  const int64_t D = c.dim, P = D / 2, C = D / 16;
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t g = 0; g < groups; ++g) {  // 16 keys: 16 x 16 dword transposes, P / 16 of them
    const uint32_t* src[16];
    for (int64_t j = 0; j < 16; ++j)
      src[j] = 16 * g + j < n ? reinterpret_cast<const uint32_t*>(c.keys + c.offset(n0 + 16 * g + j, h)) : nullptr;
    for (int64_t b = 0; b < P / 16; ++b) {
      __m512i rows[16], cols[16];
      for (int j = 0; j < 16; ++j) rows[j] = src[j] ? _mm512_loadu_si512(src[j] + 16 * b) : zero;
      transpose16(rows, cols);
      for (int p = 0; p < 16; ++p) _mm512_storeu_si512(s.keys.data() + (g * P + 16 * b + p) * 16, cols[p]);
    }
  }
  alignas(64) uint16_t lo_index[32], hi_index[32];  // interleave the 16-bit words of two registers
  for (int l = 0; l < 16; ++l) {
    lo_index[2 * l] = l, lo_index[2 * l + 1] = 32 + l;
    hi_index[2 * l] = 16 + l, hi_index[2 * l + 1] = 48 + l;
  }
  const __m512i lo = _mm512_load_si512(lo_index), hi = _mm512_load_si512(hi_index);
  for (int64_t i = 0; 2 * i < n; ++i) {
    const uint16_t* a = c.values + c.offset(n0 + 2 * i, h);
    const uint16_t* b = 2 * i + 1 < n ? c.values + c.offset(n0 + 2 * i + 1, h) : nullptr;
    for (int64_t z = 0; z < D / 32; ++z) {
      const __m512i va = _mm512_loadu_si512(a + 32 * z), vb = b ? _mm512_loadu_si512(b + 32 * z) : zero;
      _mm512_storeu_si512(s.values.data() + (i * C + 2 * z) * 16, _mm512_permutex2var_epi16(va, lo, vb));
      _mm512_storeu_si512(s.values.data() + (i * C + 2 * z + 1) * 16, _mm512_permutex2var_epi16(va, hi, vb));
    }
  }
}

// scores[r][16g + j] = scale * (q_r . key 16g+j) for rows [0, rows4) (a multiple of 4), groups [0, groups) (even).
// Register tile: 4 rows x 2 groups of 16 keys = 8 independent float32 accumulators.
void scores_tile(Scratch& s, int64_t rows4, int64_t groups, int64_t P, float scale) {
  const uint32_t* q = reinterpret_cast<const uint32_t*>(s.q.data());
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t g = 0; g < groups; g += 2) {
    const uint32_t* k0 = s.keys.data() + g * P * 16;
    const uint32_t* k1 = k0 + P * 16;
    for (int64_t r = 0; r < rows4; r += 4) {
      const uint32_t* q0 = q + r * P;
      __m512 a[4][2];
      for (auto& row : a) row[0] = row[1] = _mm512_setzero_ps();
      for (int64_t p = 0; p < P; ++p) {
        const __m512bh kv0 = (__m512bh)_mm512_loadu_si512(k0 + p * 16);
        const __m512bh kv1 = (__m512bh)_mm512_loadu_si512(k1 + p * 16);
        for (int i = 0; i < 4; ++i) {
          const __m512bh qq = (__m512bh)_mm512_set1_epi32(static_cast<int>(q0[i * P + p]));
          a[i][0] = _mm512_dpbf16_ps(a[i][0], kv0, qq);
          a[i][1] = _mm512_dpbf16_ps(a[i][1], kv1, qq);
        }
      }
      float* out = s.scores.data() + r * KEYS + g * 16;
      for (int i = 0; i < 4; ++i) {
        _mm512_storeu_ps(out + i * KEYS, _mm512_mul_ps(a[i][0], vscale));
        _mm512_storeu_ps(out + i * KEYS + 16, _mm512_mul_ps(a[i][1], vscale));
      }
    }
  }
}

// Row r's scores [0, visible) -> exp(score - new max), the rest of [0, n rounded up to 16) -> 0, also in bfloat16;
// rescales the row's accumulator and sum by exp(old max - new max).
void softmax_step(Scratch& s, int64_t r, int64_t visible, int64_t n, int64_t D) {
  float* row = s.scores.data() + r * KEYS;
  uint16_t* probs = s.probs.data() + r * KEYS;
  if (visible <= 0) {  // this chunk lies wholly after the row's position (or r is a padding row)
    std::fill(probs, probs + (n + 15) / 16 * 16, uint16_t{0});
    return;
  }
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < visible; j += 16) {
    const __mmask16 mask = static_cast<__mmask16>((1u << std::min<int64_t>(16, visible - j)) - 1u);
    vmax = _mm512_mask_max_ps(vmax, mask, vmax, _mm512_loadu_ps(row + j));
  }
  const float new_max = std::max(s.max[r], _mm512_reduce_max_ps(vmax));
  const float alpha = std::exp(s.max[r] - new_max);  // 0 on the row's first chunk (its max was -inf)
  s.max[r] = new_max;
  const __m512 shift = _mm512_set1_ps(new_max);
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t valid = std::clamp<int64_t>(visible - j, 0, 16);
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
    const __m512 e = _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, row + j), shift)));
    vsum = _mm512_add_ps(vsum, e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(probs + j), (__m256i)_mm512_cvtneps_pbh(e));
  }
  s.sum[r] = s.sum[r] * alpha + _mm512_reduce_add_ps(vsum);
  if (alpha != 1.0f) {
    float* a = s.acc.data() + r * D;
    const __m512 va = _mm512_set1_ps(alpha);
    for (int64_t d = 0; d < D; d += 16) _mm512_storeu_ps(a + d, _mm512_mul_ps(_mm512_loadu_ps(a + d), va));
  }
}

// acc[r] += sum_j p[r][j] * value_j for rows [0, rows4), keys [0, 2 * pairs), two keys per vdpbf16ps.
// Register tile: 4 rows x DC zmm of 16 dims.
template <int DC>
void accumulate_values(Scratch& s, int64_t rows4, int64_t pairs, int64_t D) {
  const int64_t C = D / 16;
  for (int64_t c0 = 0; c0 < C; c0 += DC) {
    for (int64_t r = 0; r < rows4; r += 4) {
      __m512 a[4][DC];
      for (int i = 0; i < 4; ++i)
        for (int c = 0; c < DC; ++c) a[i][c] = _mm512_loadu_ps(s.acc.data() + (r + i) * D + 16 * (c0 + c));
      const uint32_t* p = reinterpret_cast<const uint32_t*>(s.probs.data() + r * KEYS);  // pairs of keys
      for (int64_t k = 0; k < pairs; ++k) {
        __m512bh v[DC];
        for (int c = 0; c < DC; ++c) v[c] = (__m512bh)_mm512_loadu_si512(s.values.data() + (k * C + c0 + c) * 16);
        for (int i = 0; i < 4; ++i) {
          const __m512bh w = (__m512bh)_mm512_set1_epi32(static_cast<int>(p[i * KEYS / 2 + k]));
          for (int c = 0; c < DC; ++c) a[i][c] = _mm512_dpbf16_ps(a[i][c], v[c], w);
        }
      }
      for (int i = 0; i < 4; ++i)
        for (int c = 0; c < DC; ++c) _mm512_storeu_ps(s.acc.data() + (r + i) * D + 16 * (c0 + c), a[i][c]);
    }
  }
}

// One task: kv head h, query tokens [t0, t1); row r = (t0 + r / G, query head h * G + r % G).
void attend_tile(const Cache& c, const uint16_t* q, uint16_t* out, int64_t Hq, int64_t G, int64_t h, int64_t t0,
                 int64_t t1, int64_t start, float scale, Scratch& s) {
  const int64_t D = c.dim, rows = (t1 - t0) * G, rows4 = (rows + 3) / 4 * 4;
  s.q.assign(rows4 * D, 0);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(s.q.data() + r * D, q + ((t0 + r / G) * Hq + h * G + r % G) * D, D * sizeof(uint16_t));
  s.acc.assign(rows4 * D, 0.0f);
  s.max.assign(rows4, -std::numeric_limits<float>::infinity());
  s.sum.assign(rows4, 0.0f);
  s.scores.resize(rows4 * KEYS);
  s.probs.resize(rows4 * KEYS);
  const int64_t end = start + t1;  // the tile's last token sees positions [0, end)
  for (int64_t n0 = 0; n0 < end; n0 += KEYS) {
    const int64_t n = std::min(KEYS, end - n0), groups = ((n + 15) / 16 + 1) / 2 * 2;
    load_chunk(c, h, n0, n, groups, s);
    scores_tile(s, rows4, groups, D / 2, scale);
    for (int64_t r = 0; r < rows4; ++r)  // padding rows (r >= rows) see nothing: probabilities 0
      softmax_step(s, r, r < rows ? std::min(n, start + t0 + r / G + 1 - n0) : 0, n, D);
    if (D % 64 == 0)
      accumulate_values<4>(s, rows4, (n + 1) / 2, D);
    else
      accumulate_values<2>(s, rows4, (n + 1) / 2, D);
  }
  for (int64_t r = 0; r < rows; ++r) {
    uint16_t* o = out + ((t0 + r / G) * Hq + h * G + r % G) * D;
    const __m512 inv = _mm512_set1_ps(1.0f / s.sum[r]);
    for (int64_t d = 0; d < D; d += 16) store16(o + d, _mm512_mul_ps(_mm512_loadu_ps(s.acc.data() + r * D + d), inv));
  }
}

at::Tensor paged_prefill(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                         const at::Tensor& block_table, int64_t start, int64_t block_size, double scale) {
  TORCH_CHECK(q.dim() == 3 && key_cache.dim() == 3 && value_cache.dim() == 3, "q [T, Hq, D], caches [slots, Hkv, D]");
  TORCH_CHECK(q.device().is_cpu() && key_cache.device().is_cpu() && value_cache.device().is_cpu(),
              "paged_prefill runs on CPU tensors");
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && key_cache.scalar_type() == at::kBFloat16 &&
                  value_cache.scalar_type() == at::kBFloat16,
              "paged_prefill takes bfloat16 queries and caches, got ", q.scalar_type(), " and ",
              key_cache.scalar_type());
  TORCH_CHECK(key_cache.sizes() == value_cache.sizes() && key_cache.size(2) == q.size(2), "cache shapes differ");
  TORCH_CHECK(q.size(2) % 32 == 0, "head_dim must be a multiple of 32, got ", q.size(2));
  TORCH_CHECK(q.size(1) % key_cache.size(1) == 0, "query heads must be a multiple of kv heads");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "caches must be contiguous");
  TORCH_CHECK(block_table.dim() == 1 && block_table.scalar_type() == at::kLong, "block_table is [W] int64");
  TORCH_CHECK(block_size > 0 && start >= 0 && start + q.size(0) <= block_table.size(0) * block_size,
              "positions 0..start+T-1 must lie inside the block table");
  const at::Tensor qc = q.contiguous(), table = block_table.contiguous();
  const int64_t T = qc.size(0), Hq = qc.size(1), D = qc.size(2), Hkv = key_cache.size(1), G = Hq / Hkv;
  const int64_t slots = key_cache.size(0);
  const int64_t* tp = table.data_ptr<int64_t>();
  for (int64_t b = 0; b < (start + T + block_size - 1) / block_size; ++b)
    TORCH_CHECK(tp[b] >= 0 && (tp[b] + 1) * block_size <= slots, "block_table names a block outside the cache");
  at::Tensor out = at::empty_like(qc);
  const Cache cache{reinterpret_cast<const uint16_t*>(key_cache.data_ptr()),
                    reinterpret_cast<const uint16_t*>(value_cache.data_ptr()), tp, block_size, Hkv, D};
  const auto* qp = reinterpret_cast<const uint16_t*>(qc.data_ptr());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());
  const int64_t tile = std::max<int64_t>(1, ROWS / G), tiles = (T + tile - 1) / tile;
  const float fscale = static_cast<float>(scale);
  at::parallel_for(0, Hkv * tiles, 1, [&](int64_t begin, int64_t end) {
    Scratch s;
    s.keys.resize(KEYS * D / 2);
    s.values.resize(KEYS * D / 2);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t h = i / tiles, t0 = i % tiles * tile;
      attend_tile(cache, qp, op, Hq, G, h, t0, std::min(T, t0 + tile), start, fscale, s);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwick, m) {
  m.def("paged_prefill(Tensor q, Tensor key_cache, Tensor value_cache, Tensor block_table, int start, "
        "int block_size, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwick, CPU, m) { m.impl("paged_prefill", &paged_prefill); }
