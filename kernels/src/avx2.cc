// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; called only when the CPU has them): the path
// AMD EPYC Zen 2/3 and older Intel servers take. Same rules as avx512.cc: anonymous namespace, no templates
// from the standard library.
#include <immintrin.h>

#include "layouts.h"

namespace opx {
namespace avx2 {
namespace {

template <int VT>
inline __m256 load_values(const void* base, int64_t i) {
  if (VT == kF32) return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  if (VT == kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i)));
  }
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(base) + i))));
}

// The packed layout has tiles of 16 columns; AVX2 runs each as two halves of 8 (half h = lanes 8h..8h+7).
template <int M>
inline __m256i load_positions(const uint8_t* index, int h) {
  if (M == 4) {
    const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const int32_t word = static_cast<int32_t>(*reinterpret_cast<const uint32_t*>(index) >> (16 * h));
    return _mm256_srlv_epi32(_mm256_set1_epi32(word), shifts);
  }
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(index + 8 * h)));
}

// R rows x TT half-tiles (8 columns each), starting at half-tile u (column 8u).
// m = 4: the group of 4 sits in both 128-bit halves and an in-lane permute reads bits 0-1 of each position;
// m = 8: the 8 values in one register and a cross-lane permute reads bits 0-2.
template <int R, int TT, int VT, int M, int NK>
void sparse_block(const SparsePacked& w, const float* A, float* Y, int64_t r, int64_t u) {
  __m256 acc[R][TT];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < TT; ++j) acc[i][j] = _mm256_setzero_ps();
  const int n = NK ? NK : w.n;  // 2:4 and 4:8 are compile-time, so every loop below unrolls
  for (int64_t g = 0; g < w.groups; ++g) {
    __m256 xs[R];
    if (M == 4) {
      for (int i = 0; i < R; ++i) xs[i] = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(A + (r + i) * w.K + g * 4));
    } else {
      for (int i = 0; i < R; ++i) xs[i] = _mm256_loadu_ps(A + (r + i) * w.K + g * 8);
    }
#pragma GCC unroll 8
    for (int s = 0; s < n; ++s) {  // runtime n outermost: the unrolled loops keep accumulators in registers
#pragma GCC unroll 8
      for (int j = 0; j < TT; ++j) {
        const int64_t t = (u + j) >> 1;
        const int h = static_cast<int>((u + j) & 1);
        const int64_t slot = (t * w.groups + g) * n + s;
        const __m256 v = load_values<VT>(w.values, slot * 16 + 8 * h);
        const __m256i pos = load_positions<M>(w.index + slot * w.index_bytes, h);
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) {
          const __m256 x = M == 4 ? _mm256_permutevar_ps(xs[i], pos) : _mm256_permutevar8x32_ps(xs[i], pos);
          acc[i][j] = _mm256_fmadd_ps(x, v, acc[i][j]);
        }
      }
    }
  }
  for (int j = 0; j < TT; ++j) {
    const int64_t col = (u + j) * 8;
    const int64_t left = w.N - col;
    for (int i = 0; i < R; ++i) {
      float out[8];
      _mm256_storeu_ps(out, acc[i][j]);
      for (int l = 0; l < 8 && l < left; ++l) {
        float y = out[l];
        if (w.scale) y *= w.scale[col + l];
        if (w.bias) y += w.bias[col + l];
        Y[(r + i) * w.N + col + l] = y;
      }
    }
  }
}

#include "sparse_walk.inc"

template <int VT, int M, int NK>
void sparse_typed(const SparsePacked& w, const float* A, float* Y, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  // Column units are half-tiles of 8; those past N hold only padding and are skipped.
  const int64_t u1 = 2 * t1 < (w.N + 7) / 8 ? 2 * t1 : (w.N + 7) / 8;
  sparse_walk<4, 2, 4, 2, 4, VT, M, NK>(w, A, Y, r0, r1, 2 * t0, u1);
}

// ---- codebook (LUT) GEMM: 8 codes at a time -----------------------------------------------------------

inline __m256 load_x(const float* a, int64_t k, int64_t K) {
  const int64_t left = K - k;
  if (left >= 8) return _mm256_loadu_ps(a + k);
  if (left <= 0) return _mm256_setzero_ps();
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)), lane);
  return _mm256_maskload_ps(a + k, mask);
}

template <int BITS>
inline __m256 lookup(__m256i idx, __m256 lo, __m256 hi) {
  if (BITS == 4) {  // 16 entries: bit 3 chooses the half
    const __m256 mask = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), mask);
  }
  return _mm256_permutevar8x32_ps(lo, idx);  // tables replicated: bits 0-2 suffice
}

// R rows x C columns; each 64-byte block is read as two halves of 8 lanes (codes 16 q + 8 h + i).
template <int R, int C, int BITS>
void lut_block(const LutPacked& w, const float* A, float* Y, int64_t r, int64_t c) {
  constexpr int kShift = BITS == 2 ? 2 : 4;
  constexpr int kSlices = BITS == 2 ? 16 : 8;
  __m256 acc[R][C];
  __m256 tlo[C], thi[C];
#pragma GCC unroll 16
  for (int j = 0; j < C; ++j) tlo[j] = thi[j] = _mm256_setzero_ps();
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < C; ++j) acc[i][j] = _mm256_setzero_ps();
  const int64_t blocks = w.col_bytes / 64;
  const int64_t stride = w.per_column ? w.N : 1;
  const int64_t group = w.group_size ? w.group_size : (int64_t{1} << 62);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int h = 0; h < 2; ++h) {
      __m256i codes[C];
#pragma GCC unroll 16
      for (int j = 0; j < C; ++j)
        codes[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.codes + (c + j) * w.col_bytes + b * 64 + 32 * h));
#pragma GCC unroll 16
      for (int q = 0; q < kSlices; ++q) {
        const int64_t k16 = b * 16 * kSlices + 16 * q;  // the 16-code slice; this half holds its lanes 8h..8h+7
        if (k16 >= w.K) break;
        if (k16 % group == 0) {
          const float* base = w.tables + (k16 / group) * stride * 16;
#pragma GCC unroll 16
          for (int j = 0; j < C; ++j) {
            const float* t = base + (w.per_column ? (c + j) * 16 : 0);
            tlo[j] = _mm256_loadu_ps(t);
            thi[j] = _mm256_loadu_ps(t + 8);
          }
        }
        __m256 x[R];
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) x[i] = load_x(A + (r + i) * w.K, k16 + 8 * h, w.K);
#pragma GCC unroll 16
        for (int j = 0; j < C; ++j) {
          const __m256i idx = q == 0 ? codes[j] : _mm256_srli_epi32(codes[j], kShift * q);
          const __m256 wq = lookup<BITS>(idx, tlo[j], thi[j]);
#pragma GCC unroll 16
          for (int i = 0; i < R; ++i) acc[i][j] = _mm256_fmadd_ps(wq, x[i], acc[i][j]);
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < C; ++j) {
      const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc[i][j]), _mm256_extractf128_ps(acc[i][j], 1));
      const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
      float y = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
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
  if (w.bits == 2) return lut_typed<2, 3, 4, 2>(w, A, Y, r0, r1, c0, c1);
  if (w.bits == 3) return lut_typed<2, 3, 4, 3>(w, A, Y, r0, r1, c0, c1);
  return lut_typed<2, 3, 4, 4>(w, A, Y, r0, r1, c0, c1);
}

}  // namespace avx2
}  // namespace opx
