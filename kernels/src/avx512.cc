// AVX-512 kernels (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c; called only when
// the CPU has them). Everything sits in an anonymous namespace and uses no standard-library templates.
#include <immintrin.h>

#include "layouts.h"

namespace opx {
namespace avx512 {
namespace {

template <int VT>
inline __m512 load_values(const void* base, int64_t i) {
  if (VT == kF32) return _mm512_loadu_ps(static_cast<const float*>(base) + i);
  if (VT == kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i)));
  }
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(base) + i))));
}

template <int M>
inline __m512i load_positions(const uint8_t* index) {
  if (M == 4) {
    const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // Only bits 0-1 matter: the permute below reads bits 0-3, and bits 2-3 pick one of four identical copies.
    return _mm512_srlv_epi32(_mm512_set1_epi32(*reinterpret_cast<const int32_t*>(index)), shifts);
  }
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(index)));
}

template <int M>
inline __m512 load_group(const float* a) {
  if (M == 4) return _mm512_broadcast_f32x4(_mm_loadu_ps(a));
  return _mm512_broadcast_f32x8(_mm256_loadu_ps(a));
}

// R rows x TT tiles of 16 columns, accumulators in registers over the whole of K.
template <int R, int TT, int VT, int M, int NK>
void sparse_block(const SparsePacked& w, const float* A, float* Y, int64_t r, int64_t t) {
  __m512 acc[R][TT];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < TT; ++j) acc[i][j] = _mm512_setzero_ps();
  const int n = NK ? NK : w.n;  // 2:4 and 4:8 are compile-time, so every loop below unrolls
  for (int64_t g = 0; g < w.groups; ++g) {
    __m512 xs[R];
    for (int i = 0; i < R; ++i) xs[i] = load_group<M>(A + (r + i) * w.K + g * M);
    // The slot loop (runtime n) is outermost so the tile and row loops unroll and the accumulators stay
    // in registers.
#pragma GCC unroll 8
    for (int s = 0; s < n; ++s) {
#pragma GCC unroll 8
      for (int j = 0; j < TT; ++j) {
        const int64_t slot = ((t + j) * w.groups + g) * n + s;
        const __m512 v = load_values<VT>(w.values, slot * 16);
        const __m512i pos = load_positions<M>(w.index + slot * w.index_bytes);
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) {
          // m = 4: the group sits in every 128-bit lane, so the cheaper in-lane permute (bits 0-1) suffices.
          const __m512 x = M == 4 ? _mm512_permutevar_ps(xs[i], pos) : _mm512_permutexvar_ps(pos, xs[i]);
          acc[i][j] = _mm512_fmadd_ps(x, v, acc[i][j]);
        }
      }
    }
  }
  for (int j = 0; j < TT; ++j) {
    const int64_t col = (t + j) * 16;
    const int64_t left = w.N - col;
    const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    __m512 scale = _mm512_set1_ps(1.f), bias = _mm512_setzero_ps();
    if (w.scale) scale = _mm512_maskz_loadu_ps(mask, w.scale + col);
    if (w.bias) bias = _mm512_maskz_loadu_ps(mask, w.bias + col);
    for (int i = 0; i < R; ++i) _mm512_mask_storeu_ps(Y + (r + i) * w.N + col, mask, _mm512_fmadd_ps(acc[i][j], scale, bias));
  }
}

#include "sparse_walk.inc"

// 8 rows x 2 tiles (16 accumulators), then 4 x 2, then single rows over 4 tiles (m = 1: four chains).
template <int VT, int M, int NK>
void sparse_typed(const SparsePacked& w, const float* A, float* Y, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  sparse_walk<8, 2, 4, 2, 4, VT, M, NK>(w, A, Y, r0, r1, t0, t1);
}

// ---- codebook (LUT) GEMM --------------------------------------------------------------------------------

inline __m512 load_x(const float* a, int64_t k, int64_t K) {
  const int64_t left = K - k;
  if (left >= 16) return _mm512_loadu_ps(a + k);
  if (left <= 0) return _mm512_setzero_ps();
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << left) - 1), a + k);
}

// R rows x C columns; per 64-byte block of codes, Q slices of 16 codes, each one shift + one permute.
template <int R, int C, int BITS>
void lut_block(const LutPacked& w, const float* A, float* Y, int64_t r, int64_t c) {
  constexpr int kShift = BITS == 2 ? 2 : 4;
  constexpr int kSlices = BITS == 2 ? 16 : 8;
  __m512 acc[R][C];
  __m512 table[C];
#pragma GCC unroll 16
  for (int j = 0; j < C; ++j) table[j] = _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < C; ++j) acc[i][j] = _mm512_setzero_ps();
  const int64_t blocks = w.col_bytes / 64;
  const int64_t stride = w.per_column ? w.N : 1;
  const int64_t group = w.group_size ? w.group_size : (int64_t{1} << 62);
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i codes[C];
#pragma GCC unroll 16
    for (int j = 0; j < C; ++j) codes[j] = _mm512_loadu_si512(w.codes + (c + j) * w.col_bytes + b * 64);
#pragma GCC unroll 16
    for (int q = 0; q < kSlices; ++q) {
      const int64_t k = b * 16 * kSlices + 16 * q;
      if (k >= w.K) break;
      if (k % group == 0) {
        const float* base = w.tables + (k / group) * stride * 16;
#pragma GCC unroll 16
        for (int j = 0; j < C; ++j) table[j] = _mm512_loadu_ps(base + (w.per_column ? (c + j) * 16 : 0));
      }
      __m512 x[R];
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) x[i] = load_x(A + (r + i) * w.K, k, w.K);
#pragma GCC unroll 16
      for (int j = 0; j < C; ++j) {
        const __m512i idx = q == 0 ? codes[j] : _mm512_srli_epi32(codes[j], kShift * q);
        const __m512 wq = _mm512_permutexvar_ps(idx, table[j]);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) acc[i][j] = _mm512_fmadd_ps(wq, x[i], acc[i][j]);
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < C; ++j) {
      float y = _mm512_reduce_add_ps(acc[i][j]);
      if (w.bias) y += w.bias[c + j];
      Y[(r + i) * w.N + c + j] = y;
    }
}

#include "lut_dispatch.inc"
#include "sparse_dispatch.inc"

}  // namespace

void sparse(const SparsePacked& w, const float* A, float* Y, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  sparse_dispatch(w, A, Y, r0, r1, t0, t1);
}

void lut(const LutPacked& w, const float* A, float* Y, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  if (w.bits == 2) return lut_typed<4, 4, 8, 2>(w, A, Y, r0, r1, c0, c1);
  return lut_typed<4, 4, 8, 4>(w, A, Y, r0, r1, c0, c1);  // 3-bit codes are stored as nibbles
}

}  // namespace avx512
}  // namespace opx
