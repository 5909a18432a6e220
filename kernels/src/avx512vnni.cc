// LutMatMul at accuracy level 4 with AVX-512 VNNI (compiled with -mavx512vnni and the AVX-512 flags; called
// only when the CPU has VNNI): per 64-byte block of codes, two byte shuffles look up 128 int8 weights in the
// column's 16-entry table and two vpdpbusd add their products with the unsigned activations, 64 at a time.
#include <immintrin.h>

#include "layouts.h"

namespace opx {
namespace avx512vnni {
namespace {

// R rows x C columns. int32 sums run over a span of code blocks sharing one activation scale (kScaleBlocks)
// and one table; at the span's end they turn into float once. A decoded block serves all R rows.
template <int R, int C>
void columns(const LutInt8& w, const uint8_t* Aq, const float* a_scale, float* Y, int64_t r, int64_t c) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  const int64_t stride = w.per_column ? w.N : 1;
  const int64_t spans = (w.blocks + kScaleBlocks - 1) / kScaleBlocks;
  __m512 acc[R][C];
  __m512i dot[R][C];
  float correction[R][C];
  int32_t colsum[C];
  __m512i table[C];
  float scale[C];
#pragma GCC unroll 8
  for (int j = 0; j < C; ++j) {
    colsum[j] = 0;
    table[j] = _mm512_setzero_si512();
    scale[j] = 0.f;
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      acc[i][j] = _mm512_setzero_ps();
      dot[i][j] = _mm512_setzero_si512();
      correction[i][j] = 0.f;
    }
  }
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
    __m512i a_lo[R], a_hi[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const uint8_t* a = Aq + ((r + i) * w.blocks + b) * 128;
      a_lo[i] = _mm512_loadu_si512(a);
      a_hi[i] = _mm512_loadu_si512(a + 64);
    }
#pragma GCC unroll 8
    for (int j = 0; j < C; ++j) {
      const __m512i codes = _mm512_loadu_si512(w.codes + (c + j) * w.col_bytes + b * 64);
      const __m512i w_lo = _mm512_shuffle_epi8(table[j], _mm512_and_si512(codes, low));
      const __m512i w_hi = _mm512_shuffle_epi8(table[j], _mm512_and_si512(_mm512_srli_epi16(codes, 4), low));
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) dot[i][j] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(dot[i][j], a_lo[i], w_lo), a_hi[i], w_hi);
      colsum[j] += w.colsum[b * w.N + c + j];
    }
    const bool span_ends = (b + 1) % kScaleBlocks == 0 || (b + 1) % w.group_blocks == 0 || b + 1 == w.blocks;
    if (span_ends) {
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        const float sa = a_scale[(r + i) * spans + b / kScaleBlocks];
#pragma GCC unroll 8
        for (int j = 0; j < C; ++j) {
          const float s = sa * scale[j];
          acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i][j]), _mm512_set1_ps(s), acc[i][j]);
          correction[i][j] += 128.f * static_cast<float>(colsum[j]) * s;
          dot[i][j] = _mm512_setzero_si512();
        }
      }
#pragma GCC unroll 8
      for (int j = 0; j < C; ++j) colsum[j] = 0;
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < C; ++j) {
      float y = _mm512_reduce_add_ps(acc[i][j]) - correction[i][j];
      if (w.bias) y += w.bias[c + j];
      Y[(r + i) * w.N + c + j] = y;
    }
}

}  // namespace

void quantize_activations(const float* A, int64_t rows, int64_t K, int64_t blocks, uint8_t* q, float* scales) {
  const int64_t spans = (blocks + kScaleBlocks - 1) / kScaleBlocks, span_len = kScaleBlocks * 128;
  const __m512 magnitude = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = A + r * K;
    for (int64_t sp = 0; sp < spans; ++sp) {
      __m512 biggest = _mm512_setzero_ps();
      const int64_t k_end = (sp + 1) * span_len < K ? (sp + 1) * span_len : K;
      for (int64_t k = sp * span_len; k < k_end; k += 16) {
        const int64_t left = k_end - k;
        const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
        biggest = _mm512_max_ps(biggest, _mm512_and_ps(_mm512_maskz_loadu_ps(m, a + k), magnitude));
      }
      const float top = _mm512_reduce_max_ps(biggest);
      const float scale = top > 0.f ? top / 127.f : 1.f;
      scales[r * spans + sp] = scale;
      const __m512 inverse = _mm512_set1_ps(1.f / scale);
      const int64_t b_end = (sp + 1) * kScaleBlocks < blocks ? (sp + 1) * kScaleBlocks : blocks;
      for (int64_t b = sp * kScaleBlocks; b < b_end; ++b) {
        uint8_t* out = q + (r * blocks + b) * 128;
        for (int half = 0; half < 2; ++half) {
          __m512i word = _mm512_setzero_si512();
          for (int byte = 0; byte < 4; ++byte) {  // codes 32 byte + 16 half + lane go to byte 4 lane + byte
            const int64_t k = b * 128 + 32 * byte + 16 * half;
            const int64_t left = K - k;
            const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff)
                                : left <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << left) - 1);
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + (k < K ? k : 0)), inverse));
            v = _mm512_max_epi32(_mm512_min_epi32(v, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
            v = _mm512_and_si512(_mm512_add_epi32(v, _mm512_set1_epi32(128)), _mm512_set1_epi32(0xff));
            word = _mm512_or_si512(word, _mm512_slli_epi32(v, 8 * byte));
          }
          _mm512_storeu_si512(out + 64 * half, word);
        }
      }
    }
  }
}

void lut_int8(const LutInt8& w, const uint8_t* Aq, const float* a_scale, float* Y, int64_t r0, int64_t r1, int64_t c0,
              int64_t c1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    int64_t c = c0;
    for (; c + 2 <= c1; c += 2) columns<4, 2>(w, Aq, a_scale, Y, r, c);
    for (; c < c1; ++c) columns<4, 1>(w, Aq, a_scale, Y, r, c);
  }
  for (; r < r1; ++r) {
    int64_t c = c0;
    for (; c + 4 <= c1; c += 4) columns<1, 4>(w, Aq, a_scale, Y, r, c);
    for (; c < c1; ++c) columns<1, 1>(w, Aq, a_scale, Y, r, c);
  }
}

}  // namespace avx512vnni
}  // namespace opx
