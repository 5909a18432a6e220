// Packed weight layouts shared by the generic code and the ISA-specific translation units.
//
// Only plain data lives here: the ISA units are compiled with -mavx2 / -mavx512* and must not instantiate any
// inline template the generic code also uses (the linker keeps one copy, and an AVX-512 one would then run on
// an AVX2-only CPU). So they see pointers and integers, nothing from the standard library.
#pragma once
#include <cstddef>
#include <cstdint>

namespace opx {

enum ValueType : int { kF32 = 0, kF16 = 1, kI8 = 2 };

float half_to_float(uint16_t h);  // scalar.cc

// N:M sparse weight W[K, N] (N:M along K) in its ONNX form, used in place (no copy at load): column tiles of
// 16 columns; per tile, per group g of m rows of K, per kept slot s (0..n-1, positions increasing):
//   values: 16 values (the kept W[g*m + position, column]) of `value_type`, zero in padded columns
//   index:  m == 4: one little-endian uint32 of 16 2-bit positions (lane j at bits 2j..2j+1);
//           m == 8: 16 bytes, one position each.
// AVX2 reads each tile as two halves of 8 columns.
struct SparsePacked {
  int m = 4, n = 2;
  int64_t K = 0, N = 0, groups = 0, tiles = 0;
  int value_type = kF32;
  const void* values = nullptr;   // [tiles][groups][n][16]
  const uint8_t* index = nullptr; // [tiles][groups][n] * index_bytes
  int index_bytes = 4;
  const float* scale = nullptr;   // [N] (int8 values only)
  const float* bias = nullptr;    // [N] or null
};

// Codebook weight W[K, N]: bits-wide codes into 16-entry float tables, column-major. The codes of column c
// are bytes [c * col_bytes, (c + 1) * col_bytes): blocks of 64 bytes, read as 16 little-endian uint32 lanes;
// lane i of a block holds code[16 q + i] of that block at bits [s q, s q + s), q = 0 .. Q-1, with s = 4,
// Q = 8 (128 codes a block; 3-bit codes use nibbles too) or s = 2, Q = 16 for 2 bits (256 codes). One load
// then feeds Q table lookups through shifts alone. K is padded to whole blocks with code 0; the kernels mask
// the activations past K. Tables: 16 floats per (K group, column), replicated for 2/3 bits (entry i =
// codebook[i mod 2^bits]) so that the bits above a code select the same value.
struct LutPacked {
  int bits = 4;
  int64_t K = 0, N = 0;
  int64_t col_bytes = 0;         // bytes of codes per column
  int64_t group_size = 0;        // 0: one table over K; else K rows per table (a multiple of 16)
  bool per_column = true;        // false: one table for every column (per-tensor)
  const uint8_t* codes = nullptr;
  const float* tables = nullptr; // [K groups][per_column ? N : 1][16]
  const float* bias = nullptr;
};

inline int lut_shift(int bits) { return bits == 2 ? 2 : 4; }
inline int64_t lut_block_codes(int bits) { return bits == 2 ? 256 : 128; }

// LutMatMul at accuracy level 4: int8 tables (16 entries per K group and column, table value =
// round(codebook / scale)), activations quantized per row and span of kScaleBlocks code blocks (512 codes:
// int32 sums of 8 vpdpbusd per lane stay far below 2^31). The codes are LutPacked's;
// per row and block the activations arrive as 128 bytes (value + 128, so unsigned) in the order the
// nibbles sit in the code block: bytes 0..63 pair with the low nibbles (byte 4i+j <-> code 32j+i), bytes
// 64..127 with the high ones (code 32j+16+i). colsum[block][column] = sum of the table values of that
// block's codes (padding included) undoes the +128.
struct LutInt8 {
  int64_t K = 0, N = 0, blocks = 0, col_bytes = 0;
  int64_t group_blocks = 0;       // blocks per K group (table switch); >= blocks when one table over K
  bool per_column = true;
  const uint8_t* codes = nullptr;
  const int8_t* tables = nullptr;  // [groups][per_column ? N : 1][16]
  const float* table_scale = nullptr;  // [groups][per_column ? N : 1]
  const int32_t* colsum = nullptr;     // [blocks][N]
  const float* bias = nullptr;
};

// Y[r0:r1, c0:c1]: Aq [rows][blocks][128] unsigned activations, a_scale [rows][ceil(blocks / kScaleBlocks)].
constexpr int64_t kScaleBlocks = 4;
using LutInt8Fn = void (*)(const LutInt8&, const uint8_t* Aq, const float* a_scale, float* Y, int64_t r0, int64_t r1,
                           int64_t c0, int64_t c1);
namespace avx512vnni {
void lut_int8(const LutInt8&, const uint8_t*, const float*, float*, int64_t, int64_t, int64_t, int64_t);
// A [rows, K] into that form: q [rows][blocks][128], scales [rows][ceil(blocks / kScaleBlocks)].
void quantize_activations(const float* A, int64_t rows, int64_t K, int64_t blocks, uint8_t* q, float* scales);
}  // namespace avx512vnni

// Y[r0:r1, tile/column block] for row-major A [rows, K] and Y [rows, N].
using SparseFn = void (*)(const SparsePacked&, const float* A, float* Y, int64_t r0, int64_t r1, int64_t t0,
                          int64_t t1);
using LutFn = void (*)(const LutPacked&, const float* A, float* Y, int64_t r0, int64_t r1, int64_t c0, int64_t c1);

namespace scalar {
void sparse(const SparsePacked&, const float*, float*, int64_t, int64_t, int64_t, int64_t);
void lut(const LutPacked&, const float*, float*, int64_t, int64_t, int64_t, int64_t);
}  // namespace scalar
namespace avx2 {
void sparse(const SparsePacked&, const float*, float*, int64_t, int64_t, int64_t, int64_t);
void lut(const LutPacked&, const float*, float*, int64_t, int64_t, int64_t, int64_t);
}  // namespace avx2
namespace avx512 {
void sparse(const SparsePacked&, const float*, float*, int64_t, int64_t, int64_t, int64_t);
void lut(const LutPacked&, const float*, float*, int64_t, int64_t, int64_t, int64_t);
}  // namespace avx512

}  // namespace opx
