// LutMatMul at accuracy level 4 with AVX-512 VNNI (compiled with -mavx512vnni and the AVX-512 flags; called
// only when the CPU has VNNI): per 64-byte block of codes, two byte shuffles look up 128 int8 weights in the
// column's 16-entry table and two vpdpbusd add their products with the unsigned activations, 64 at a time.
#include <immintrin.h>

#include "layouts.h"

namespace opx {
namespace avx512vnni {
namespace {

template <int C>
void columns(const LutInt8& w, const uint8_t* Aq, const float* a_scale, float* Y, int64_t r, int64_t c) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  const int64_t stride = w.per_column ? w.N : 1;
  __m512 acc[C];
  float correction[C];
  __m512i table[C];
  float scale[C];
#pragma GCC unroll 8
  for (int j = 0; j < C; ++j) {
    acc[j] = _mm512_setzero_ps();
    correction[j] = 0.f;
    table[j] = _mm512_setzero_si512();
    scale[j] = 0.f;
  }
  const uint8_t* a_row = Aq + r * w.blocks * 128;
  const float* s_row = a_scale + r * w.blocks;
  for (int64_t b = 0; b < w.blocks; ++b) {
    if (b % w.group_blocks == 0) {
      const int64_t g = b / w.group_blocks;
#pragma GCC unroll 8
      for (int j = 0; j < C; ++j) {
        const int64_t t = g * stride + (w.per_column ? c + j : 0);
        table[j] = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.tables + t * 16)));
        scale[j] = w.table_scale[t];
      }
    }
    const __m512i a_lo = _mm512_loadu_si512(a_row + b * 128);
    const __m512i a_hi = _mm512_loadu_si512(a_row + b * 128 + 64);
    const float sa = s_row[b];
#pragma GCC unroll 8
    for (int j = 0; j < C; ++j) {
      const __m512i codes = _mm512_loadu_si512(w.codes + (c + j) * w.col_bytes + b * 64);
      const __m512i w_lo = _mm512_shuffle_epi8(table[j], _mm512_and_si512(codes, low));
      const __m512i w_hi = _mm512_shuffle_epi8(table[j], _mm512_and_si512(_mm512_srli_epi16(codes, 4), low));
      __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), a_lo, w_lo);
      dot = _mm512_dpbusd_epi32(dot, a_hi, w_hi);
      const float s = sa * scale[j];
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(s), acc[j]);
      correction[j] += 128.f * static_cast<float>(w.colsum[b * w.N + c + j]) * s;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < C; ++j) {
    float y = _mm512_reduce_add_ps(acc[j]) - correction[j];
    if (w.bias) y += w.bias[c + j];
    Y[r * w.N + c + j] = y;
  }
}

}  // namespace

void lut_int8(const LutInt8& w, const uint8_t* Aq, const float* a_scale, float* Y, int64_t r0, int64_t r1, int64_t c0,
              int64_t c1) {
  for (int64_t r = r0; r < r1; ++r) {
    int64_t c = c0;
    for (; c + 4 <= c1; c += 4) columns<4>(w, Aq, a_scale, Y, r, c);
    for (; c < c1; ++c) columns<1>(w, Aq, a_scale, Y, r, c);
  }
}

}  // namespace avx512vnni
}  // namespace opx
