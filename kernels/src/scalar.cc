// Portable kernels over the packed layouts: the fallback on CPUs without AVX2/FMA/F16C, and the path
// ONNXPRESS_KERNELS_ISA=scalar forces (tests compare every ISA against it and against numpy).
#include <cstring>

#include "layouts.h"

namespace opx {

float half_to_float(uint16_t h) {  // IEEE binary16 -> float, subnormals included
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

namespace scalar {
namespace {

float value_at(const SparsePacked& w, int64_t i) {
  switch (w.value_type) {
    case kF16: return half_to_float(static_cast<const uint16_t*>(w.values)[i]);
    case kI8: return static_cast<float>(static_cast<const int8_t*>(w.values)[i]);
    default: return static_cast<const float*>(w.values)[i];
  }
}

int position(const SparsePacked& w, const uint8_t* index, int lane) {
  if (w.m == 4) {
    uint32_t word;
    std::memcpy(&word, index, 4);
    return static_cast<int>((word >> (2 * lane)) & 3u);
  }
  return index[lane];
}

}  // namespace

void sparse(const SparsePacked& w, const float* A, float* Y, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const int L = 16;
  for (int64_t r = r0; r < r1; ++r) {
    const float* a = A + r * w.K;
    for (int64_t t = t0; t < t1; ++t) {
      for (int lane = 0; lane < L; ++lane) {
        const int64_t col = t * L + lane;
        if (col >= w.N) break;
        float acc = 0.f;
        for (int64_t g = 0; g < w.groups; ++g) {
          for (int s = 0; s < w.n; ++s) {
            const int64_t slot = (t * w.groups + g) * w.n + s;
            const int pos = position(w, w.index + slot * w.index_bytes, lane);
            acc += a[g * w.m + pos] * value_at(w, slot * L + lane);
          }
        }
        if (w.scale) acc *= w.scale[col];
        if (w.bias) acc += w.bias[col];
        Y[r * w.N + col] = acc;
      }
    }
  }
}

void lut(const LutPacked& w, const float* A, float* Y, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  const int64_t block = lut_block_codes(w.bits);
  const int shift = lut_shift(w.bits);
  const uint32_t mask = (1u << shift) - 1;
  for (int64_t r = r0; r < r1; ++r) {
    const float* a = A + r * w.K;
    for (int64_t c = c0; c < c1; ++c) {
      const uint8_t* codes = w.codes + c * w.col_bytes;
      float acc = 0.f;
      for (int64_t k = 0; k < w.K; ++k) {
        const int64_t b = k / block, q = (k % block) / 16, i = k % 16;
        uint32_t lane;
        std::memcpy(&lane, codes + b * 64 + 4 * i, 4);
        const uint32_t code = (lane >> (shift * q)) & mask;
        const int64_t tg = w.group_size ? k / w.group_size : 0;
        const float* table = w.tables + (tg * (w.per_column ? w.N : 1) + (w.per_column ? c : 0)) * 16;
        acc += a[k] * table[code];
      }
      if (w.bias) acc += w.bias[c];
      Y[r * w.N + c] = acc;
    }
  }
}

}  // namespace scalar
}  // namespace opx
