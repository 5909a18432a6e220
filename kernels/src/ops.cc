// onnxruntime custom ops in domain "onnxpress": SparseMatMul, LutMatMul, DecodeWeights.
//
// Built against onnxruntime's public headers only (no link to libonnxruntime): the runtime hands us its API
// table in RegisterCustomOps. Constant weights are read once when the session creates the kernel
// (KernelInfoGetConstantInput_tensor), validated there, and used in place where their ONNX form is already the
// kernels' layout; a weight fed at run time is validated and used per call. Work is split with the session's
// own intra-op thread pool (KernelContext_ParallelFor), so intra_op_num_threads is respected.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "entropy.h"
#include "layouts.h"

namespace opx {
namespace {

// ---- ISA dispatch ----------------------------------------------------------------------------------------

enum Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

int cpu_isa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
    return kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx")) return kAvx2;
#endif
  return kScalar;
}

// The best the CPU runs, lowered by ONNXPRESS_KERNELS_ISA=avx2|scalar (tests run every path on one machine).
int active_isa() {
  static const int isa = [] {
    int best = cpu_isa();
    const char* want = std::getenv("ONNXPRESS_KERNELS_ISA");
    if (want && std::strcmp(want, "scalar") == 0) return static_cast<int>(kScalar);
    if (want && std::strcmp(want, "avx2") == 0 && best >= kAvx2) return static_cast<int>(kAvx2);
    return best;
  }();
  return isa;
}

// AVX-512 VNNI for LutMatMul's accuracy level 4 (only where the AVX-512 path is active).
bool has_vnni() {
#if defined(__x86_64__)
  static const bool yes = active_isa() == kAvx512 && __builtin_cpu_supports("avx512vnni");
  return yes;
#else
  return false;
#endif
}

SparseFn sparse_fn() {
  switch (active_isa()) {
    case kAvx512: return avx512::sparse;
    case kAvx2: return avx2::sparse;
    default: return scalar::sparse;
  }
}

LutFn lut_fn() {
  switch (active_isa()) {
    case kAvx512: return avx512::lut;
    case kAvx2: return avx2::lut;
    default: return scalar::lut;
  }
}

// ---- errors ---------------------------------------------------------------------------------------------

struct OpError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string node_name(const OrtKernelInfo* info) {
  try {
    return Ort::ConstKernelInfo(info).GetNodeName();
  } catch (...) {
    return "?";
  }
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

template <typename F>
OrtStatusPtr guarded(const std::string& where, F&& fn) {
  try {
    fn();
    return nullptr;
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, (where + ": " + e.what()).c_str());
  }
}

// A view of one input: constant from the kernel info when the session has it, else taken per call.
struct TensorView {
  const void* data = nullptr;
  std::vector<int64_t> shape;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  size_t count() const {
    size_t c = 1;
    for (int64_t d : shape) c *= static_cast<size_t>(d);
    return c;
  }
};

TensorView view_of(const Ort::ConstValue& value) {
  TensorView v;
  auto info = value.GetTensorTypeAndShapeInfo();
  v.shape = info.GetShape();
  v.type = info.GetElementType();
  v.data = value.GetTensorRawData();
  return v;
}

// Returns false when the input is absent or not constant.
bool constant_input(const OrtKernelInfo* info, size_t index, TensorView* out) {
  size_t count = 0;
  Ort::ThrowOnError(Ort::GetApi().KernelInfo_GetInputCount(info, &count));
  if (index >= count) return false;
  int is_constant = 0;
  const OrtValue* value = nullptr;
  Ort::ThrowOnError(Ort::GetApi().KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value));
  if (!is_constant || value == nullptr) return false;
  *out = view_of(Ort::ConstValue(value));
  return true;
}

bool runtime_input(Ort::KernelContext& ctx, size_t index, TensorView* out) {
  if (index >= ctx.GetInputCount()) return false;
  Ort::ConstValue value = ctx.GetInput(index);
  if (!value) return false;
  *out = view_of(value);
  return true;
}

int64_t attr_int(const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t v = 0;
  OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &v);
  if (status) {
    Ort::GetApi().ReleaseStatus(status);
    return fallback;
  }
  return v;
}

std::vector<int64_t> attr_ints(const OrtKernelInfo* info, const char* name) {
  try {
    return Ort::ConstKernelInfo(info).GetAttributes<int64_t>(name);
  } catch (...) {
    return {};
  }
}

struct ParallelJob {
  std::function<void(size_t)> fn;
  static void run(void* self, size_t i) { static_cast<ParallelJob*>(self)->fn(i); }
};

void parallel_for(Ort::KernelContext& ctx, size_t total, std::function<void(size_t)> fn) {
  if (total == 0) return;
  if (total == 1) return fn(0);
  ParallelJob job{std::move(fn)};
  ctx.ParallelFor(&ParallelJob::run, total, 0, &job);
}

// ---- SparseMatMul ---------------------------------------------------------------------------------------
//
// Y[..., N] = A[..., K] @ W[K, N] + bias, W N:M sparse along K (layouts.h).
// Inputs: A float32 [..., K]; values [T, K/m, n, 16] float32|float16|int8 (T = ceil(N/16)); indices uint8
// [T, K/m, n, 4] (m = 4) or [T, K/m, n, 16] (m = 8); scales float32 [N] (int8 values only, else empty);
// bias float32 [N] (optional). Attributes: N (columns), m (4 or 8, default 4), n (1..m-1, default 2).

struct SparseWeights {
  SparsePacked packed;
  std::string problem;  // non-empty: why these inputs cannot be used
};

SparsePacked describe_sparse(const std::string& where, int64_t N, int64_t m, int64_t n, const TensorView& values,
                             const TensorView& index, const TensorView* scales, const TensorView* bias) {
  if (m != 4 && m != 8) throw OpError(where + ": attribute m=" + std::to_string(m) + " is not supported (4 or 8)");
  if (n < 1 || n >= m) throw OpError(where + ": attribute n=" + std::to_string(n) + " must be in 1.." + std::to_string(m - 1));
  if (N < 1) throw OpError(where + ": attribute N (the number of output columns) is missing or not positive");
  const int64_t tiles = (N + 15) / 16;
  if (values.shape.size() != 4 || values.shape[0] != tiles || values.shape[2] != n || values.shape[3] != 16)
    throw OpError(where + ": values has shape " + shape_text(values.shape) + ", expected [" + std::to_string(tiles) +
                  ", K/m, " + std::to_string(n) + ", 16]");
  const int64_t groups = values.shape[1];
  SparsePacked w;
  w.m = static_cast<int>(m);
  w.n = static_cast<int>(n);
  w.N = N;
  w.tiles = tiles;
  w.groups = groups;
  w.K = groups * m;
  switch (values.type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: w.value_type = kF32; break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: w.value_type = kF16; break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: w.value_type = kI8; break;
    default: throw OpError(where + ": values must be float32, float16 or int8");
  }
  w.values = values.data;
  w.index_bytes = m == 4 ? 4 : 16;
  const std::vector<int64_t> want_index = {tiles, groups, n, w.index_bytes};
  if (index.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || index.shape != want_index)
    throw OpError(where + ": indices must be uint8 of shape " + shape_text(want_index) + ", got " + shape_text(index.shape));
  w.index = static_cast<const uint8_t*>(index.data);
  // Every position < m and strictly increasing within its group (no kept value twice).
  const int bits = m == 4 ? 2 : 8;
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t g = 0; g < groups; ++g)
      for (int lane = 0; lane < 16; ++lane) {
        int previous = -1;
        for (int64_t s = 0; s < n; ++s) {
          const uint8_t* p = w.index + ((t * groups + g) * n + s) * w.index_bytes;
          int pos;
          if (bits == 2) {
            uint32_t word;
            std::memcpy(&word, p, 4);
            pos = static_cast<int>((word >> (2 * lane)) & 3u);
          } else {
            pos = p[lane];
          }
          if (pos >= m || pos <= previous)
            throw OpError(where + ": indices at column " + std::to_string(t * 16 + lane) + ", group " + std::to_string(g) +
                          " are not strictly increasing positions below m=" + std::to_string(m) + " (bad metadata)");
          previous = pos;
        }
      }
  if (w.value_type == kI8) {
    if (!scales || scales->type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || scales->count() != static_cast<size_t>(N))
      throw OpError(where + ": int8 values need scales, float32 [" + std::to_string(N) + "]");
    w.scale = static_cast<const float*>(scales->data);
  } else if (scales && scales->count() != 0) {
    throw OpError(where + ": scales are for int8 values only");
  }
  if (bias && bias->count() != 0) {
    if (bias->type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || bias->count() != static_cast<size_t>(N))
      throw OpError(where + ": bias must be float32 [" + std::to_string(N) + "]");
    w.bias = static_cast<const float*>(bias->data);
  }
  return w;
}

struct SparseMatMulKernel {
  std::string where;
  int64_t N, m, n;
  bool constant = false;
  SparsePacked packed;

  SparseMatMulKernel(const OrtKernelInfo* info)
      : where("onnxpress.SparseMatMul node '" + node_name(info) + "'"),
        N(attr_int(info, "N", 0)),
        m(attr_int(info, "m", 4)),
        n(attr_int(info, "n", 2)) {
    TensorView values, index, scales, bias;
    if (constant_input(info, 1, &values) && constant_input(info, 2, &index)) {
      const bool has_scales = constant_input(info, 3, &scales), has_bias = constant_input(info, 4, &bias);
      packed = describe_sparse(where, N, m, n, values, index, has_scales ? &scales : nullptr, has_bias ? &bias : nullptr);
      constant = true;
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(where, [&] {
      Ort::KernelContext ctx(context);
      SparsePacked w = packed;
      if (!constant) {
        TensorView values, index, scales, bias;
        runtime_input(ctx, 1, &values);
        runtime_input(ctx, 2, &index);
        const bool has_scales = runtime_input(ctx, 3, &scales), has_bias = runtime_input(ctx, 4, &bias);
        w = describe_sparse(where, N, m, n, values, index, has_scales ? &scales : nullptr, has_bias ? &bias : nullptr);
      }
      TensorView a;
      runtime_input(ctx, 0, &a);
      if (a.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || a.shape.empty() || a.shape.back() != w.K)
        throw OpError("input A must be float32 [..., " + std::to_string(w.K) + "], got " + shape_text(a.shape));
      std::vector<int64_t> out_shape = a.shape;
      out_shape.back() = w.N;
      auto y = ctx.GetOutput(0, out_shape);
      const int64_t rows = static_cast<int64_t>(a.count()) / w.K;
      float* Y = y.GetTensorMutableData<float>();
      const float* A = static_cast<const float*>(a.data);
      if (rows == 0) return;
      // Work items: blocks of column tiles x blocks of rows, tile-major (a weight panel is reused by its rows).
      const int64_t tile_block = rows >= 4 ? 8 : 4, row_block = rows >= 4 ? 16 : rows;
      const int64_t tblocks = (w.tiles + tile_block - 1) / tile_block, rblocks = (rows + row_block - 1) / row_block;
      SparseFn fn = sparse_fn();
      parallel_for(ctx, static_cast<size_t>(tblocks * rblocks), [&](size_t item) {
        const int64_t tb = static_cast<int64_t>(item) / rblocks, rb = static_cast<int64_t>(item) % rblocks;
        const int64_t r0 = rb * row_block, r1 = std::min(rows, r0 + row_block);
        const int64_t t0 = tb * tile_block, t1 = std::min(w.tiles, t0 + tile_block);
        fn(w, A, Y, r0, r1, t0, t1);
      });
    });
  }
};

// ---- LutMatMul ------------------------------------------------------------------------------------------
//
// Y[..., N] = A[..., K] @ W[K, N] + bias, W[k, c] = codebook[group(k), c][code(k, c)].
// Inputs: A float32 [..., K]; codes uint8 [N, col_bytes] in the blocked column-major layout of layouts.h,
// or an OPXW blob of N*K symbols (column-major, one code each; decoded and packed at load); codebook
// float32|float16 [1, 2^bits] (per tensor), [N, 2^bits] (per column) or [ceil(K/group_size), N, 2^bits]
// (per group of K rows and column); bias float32 [N] (optional). Attributes: K, N, bits (2, 3 or 4),
// group_size (0: none; else a multiple of 16).

struct LutWeights {
  LutPacked packed;
  std::vector<float> tables;
  std::vector<uint8_t> owned_codes;  // when the codes came as an entropy-coded blob
  // accuracy level 4 (int8 tables, VNNI): empty when not in use
  LutInt8 int8;
  std::vector<int8_t> int8_tables;
  std::vector<float> int8_scales;
  std::vector<int32_t> colsum;
  bool use_int8 = false;
};

// int8 tables and per-block column sums for accuracy level 4 (4/3-bit codes, K groups of whole blocks).
void prepare_int8(const int64_t entries, LutWeights* out) {
  const LutPacked& w = out->packed;
  const int64_t blocks = w.col_bytes / 64;
  const int64_t stride = w.per_column ? w.N : 1;
  const int64_t groups = w.group_size ? (w.K + w.group_size - 1) / w.group_size : 1;
  const int64_t tables = groups * stride;
  out->int8_tables.assign(static_cast<size_t>(tables * 16), 0);
  out->int8_scales.assign(static_cast<size_t>(tables), 1.f);
  for (int64_t t = 0; t < tables; ++t) {
    float biggest = 0.f;
    for (int64_t i = 0; i < entries; ++i) biggest = std::max(biggest, std::abs(out->tables[t * 16 + i]));
    const float scale = biggest > 0.f ? biggest / 127.f : 1.f;
    out->int8_scales[t] = scale;
    for (int64_t i = 0; i < 16; ++i) {
      const float q = std::nearbyint(out->tables[t * 16 + i] / scale);
      out->int8_tables[t * 16 + i] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, q)));
    }
  }
  const int64_t group_blocks = w.group_size ? w.group_size / 128 : blocks + 1;
  out->colsum.assign(static_cast<size_t>(blocks * w.N), 0);
  for (int64_t c = 0; c < w.N; ++c)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t t = (b / group_blocks) * stride + (w.per_column ? c : 0);
      const int8_t* table = out->int8_tables.data() + t * 16;
      int32_t sum = 0;
      for (int i = 0; i < 16; ++i) {
        uint32_t lane;
        std::memcpy(&lane, w.codes + c * w.col_bytes + b * 64 + 4 * i, 4);
        for (int q = 0; q < 8; ++q) sum += table[(lane >> (4 * q)) & 15u];
      }
      out->colsum[b * w.N + c] = sum;
    }
  LutInt8& v = out->int8;
  v.K = w.K;
  v.N = w.N;
  v.blocks = blocks;
  v.col_bytes = w.col_bytes;
  v.group_blocks = group_blocks;
  v.per_column = w.per_column;
  v.codes = w.codes;
  v.tables = out->int8_tables.data();
  v.table_scale = out->int8_scales.data();
  v.colsum = out->colsum.data();
  v.bias = w.bias;
  out->use_int8 = true;
}


int64_t lut_col_bytes(int64_t K, int bits) {
  const int64_t block = lut_block_codes(bits);
  return (K + block - 1) / block * 64;
}

// Column-major codes [N, K] (one per byte) into the blocked layout of layouts.h.
void pack_codes(const uint8_t* symbols, int64_t K, int64_t N, int bits, uint8_t* out, int64_t col_bytes) {
  const int64_t block = lut_block_codes(bits);
  const int shift = lut_shift(bits);
  std::memset(out, 0, static_cast<size_t>(col_bytes * N));
  for (int64_t c = 0; c < N; ++c)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t b = k / block, q = (k % block) / 16, i = k % 16;
      uint8_t* lane = out + c * col_bytes + b * 64 + 4 * i;
      const uint32_t bit = static_cast<uint32_t>(shift * q);
      lane[bit / 8] |= static_cast<uint8_t>(symbols[c * K + k] << (bit % 8));
    }
}

void describe_lut(const std::string& where, int64_t K, int64_t N, int64_t bits, int64_t group_size, int64_t accuracy_level,
                  const TensorView& codes, const TensorView& codebook, const TensorView* bias, LutWeights* out) {
  if (accuracy_level != 0 && accuracy_level != 4)
    throw OpError(where + ": accuracy_level=" + std::to_string(accuracy_level) + " is not supported (0: float, 4: int8)");
  if (bits != 2 && bits != 3 && bits != 4) throw OpError(where + ": attribute bits=" + std::to_string(bits) + " is not supported (2, 3 or 4)");
  if (K < 1 || N < 1) throw OpError(where + ": attributes K and N must be positive");
  const int64_t entries = int64_t{1} << bits;
  if (group_size != 0 && (group_size < 0 || group_size % 16 != 0))
    throw OpError(where + ": group_size=" + std::to_string(group_size) + " must be 0 or a multiple of 16");
  LutPacked& w = out->packed;
  w.bits = static_cast<int>(bits);
  w.K = K;
  w.N = N;
  w.col_bytes = lut_col_bytes(K, static_cast<int>(bits));
  if (codes.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) throw OpError(where + ": codes must be uint8");
  const uint8_t* code_bytes = static_cast<const uint8_t*>(codes.data);
  if (looks_like_blob(code_bytes, codes.count()) &&
      !(codes.shape.size() == 2 && codes.shape[0] == N && codes.shape[1] == w.col_bytes)) {
    BlobInfo blob;
    std::string problem = parse_blob(code_bytes, codes.count(), &blob);
    if (!problem.empty()) throw OpError(where + ": codes: " + problem);
    if (blob.count != static_cast<uint64_t>(K * N))
      throw OpError(where + ": codes blob holds " + std::to_string(blob.count) + " codes, expected K*N = " + std::to_string(K * N));
    std::vector<uint8_t> identity(static_cast<size_t>(entries));
    for (int64_t i = 0; i < entries; ++i) identity[i] = static_cast<uint8_t>(i);
    std::vector<uint8_t> symbols(static_cast<size_t>(K * N));
    problem = decode_blob(blob, identity.data(), identity.size(), 1, symbols.data());
    if (!problem.empty()) throw OpError(where + ": codes: " + problem);
    out->owned_codes.resize(static_cast<size_t>(w.col_bytes * N));
    pack_codes(symbols.data(), K, N, static_cast<int>(bits), out->owned_codes.data(), w.col_bytes);
    w.codes = out->owned_codes.data();
  } else {
    const std::vector<int64_t> want = {N, w.col_bytes};
    if (codes.shape != want)
      throw OpError(where + ": codes has shape " + shape_text(codes.shape) + ", expected " + shape_text(want) +
                    " (packed codes) or an OPXW blob");
    if (bits == 3)  // 3-bit codes sit in nibbles: the top bit of each must be clear
      for (size_t i = 0; i < codes.count(); ++i)
        if (code_bytes[i] & 0x88)
          throw OpError(where + ": a 3-bit code at byte " + std::to_string(i) + " is >= 8 (index out of codebook)");
    w.codes = code_bytes;
  }
  // Codebook scope from its shape.
  const auto& cs = codebook.shape;
  int64_t groups = 1;
  bool per_column = true;
  if (cs.size() == 2 && cs[0] == 1 && cs[1] == entries) {
    per_column = false;
  } else if (cs.size() == 2 && cs[0] == N && cs[1] == entries) {
  } else if (cs.size() == 3 && group_size > 0 && cs[0] == (K + group_size - 1) / group_size && cs[1] == N && cs[2] == entries) {
    groups = cs[0];
  } else {
    throw OpError(where + ": codebook has shape " + shape_text(cs) + ", expected [1, " + std::to_string(entries) + "], [" +
                  std::to_string(N) + ", " + std::to_string(entries) + "] or [ceil(K/group_size), " + std::to_string(N) + ", " +
                  std::to_string(entries) + "] with group_size set");
  }
  w.group_size = groups > 1 ? group_size : 0;
  w.per_column = per_column;
  const int64_t tables = groups * (per_column ? N : 1);
  out->tables.assign(static_cast<size_t>(tables * 16), 0.f);
  for (int64_t t = 0; t < tables; ++t)
    for (int64_t i = 0; i < 16; ++i) {
      const int64_t src = t * entries + (i % entries);
      float v;
      if (codebook.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        v = static_cast<const float*>(codebook.data)[src];
      } else if (codebook.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
        v = half_to_float(static_cast<const uint16_t*>(codebook.data)[src]);
      } else {
        throw OpError(where + ": codebook must be float32 or float16");
      }
      out->tables[t * 16 + i] = v;
    }
  w.tables = out->tables.data();
  if (bias && bias->count() != 0) {
    if (bias->type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || bias->count() != static_cast<size_t>(N))
      throw OpError(where + ": bias must be float32 [" + std::to_string(N) + "]");
    w.bias = static_cast<const float*>(bias->data);
  }
  // Level 4 runs on VNNI with 3/4-bit codes and K groups of whole 128-code blocks; elsewhere the float path
  // (exact, slower) runs instead.
  if (accuracy_level == 4 && has_vnni() && bits != 2 && (w.group_size == 0 || w.group_size % 128 == 0))
    prepare_int8(entries, out);
}

struct LutMatMulKernel {
  std::string where;
  int64_t K, N, bits, group_size, accuracy_level;
  bool constant = false;
  std::unique_ptr<LutWeights> weights;

  LutMatMulKernel(const OrtKernelInfo* info)
      : where("onnxpress.LutMatMul node '" + node_name(info) + "'"),
        K(attr_int(info, "K", 0)),
        N(attr_int(info, "N", 0)),
        bits(attr_int(info, "bits", 4)),
        group_size(attr_int(info, "group_size", 0)),
        accuracy_level(attr_int(info, "accuracy_level", 0)) {
    TensorView codes, codebook, bias;
    if (constant_input(info, 1, &codes) && constant_input(info, 2, &codebook)) {
      const bool has_bias = constant_input(info, 3, &bias);
      weights = std::make_unique<LutWeights>();
      describe_lut(where, K, N, bits, group_size, accuracy_level, codes, codebook, has_bias ? &bias : nullptr, weights.get());
      constant = true;
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(where, [&] {
      Ort::KernelContext ctx(context);
      LutWeights per_call;
      const LutWeights* w = weights.get();
      if (!constant) {
        TensorView codes, codebook, bias;
        runtime_input(ctx, 1, &codes);
        runtime_input(ctx, 2, &codebook);
        const bool has_bias = runtime_input(ctx, 3, &bias);
        describe_lut(where, K, N, bits, group_size, accuracy_level, codes, codebook, has_bias ? &bias : nullptr, &per_call);
        w = &per_call;
      }
      TensorView a;
      runtime_input(ctx, 0, &a);
      if (a.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || a.shape.empty() || a.shape.back() != K)
        throw OpError("input A must be float32 [..., " + std::to_string(K) + "], got " + shape_text(a.shape));
      std::vector<int64_t> out_shape = a.shape;
      out_shape.back() = N;
      auto y = ctx.GetOutput(0, out_shape);
      const int64_t rows = static_cast<int64_t>(a.count()) / K;
      if (rows == 0) return;
      float* Y = y.GetTensorMutableData<float>();
      const float* A = static_cast<const float*>(a.data);
      const int64_t col_block = rows >= 4 ? 24 : 32, row_block = rows >= 4 ? 16 : rows;
      const int64_t cblocks = (N + col_block - 1) / col_block, rblocks = (rows + row_block - 1) / row_block;
      if (w->use_int8) {
        const int64_t blocks = w->int8.blocks;
        std::vector<uint8_t> aq(static_cast<size_t>(rows * blocks * 128));
        std::vector<float> scales(static_cast<size_t>(rows * ((blocks + kScaleBlocks - 1) / kScaleBlocks)));
        avx512vnni::quantize_activations(A, rows, K, blocks, aq.data(), scales.data());
        const LutInt8& v = w->int8;
        parallel_for(ctx, static_cast<size_t>(cblocks * rblocks), [&](size_t item) {
          const int64_t cb = static_cast<int64_t>(item) / rblocks, rb = static_cast<int64_t>(item) % rblocks;
          avx512vnni::lut_int8(v, aq.data(), scales.data(), Y, rb * row_block, std::min(rows, rb * row_block + row_block),
                               cb * col_block, std::min(N, cb * col_block + col_block));
        });
        return;
      }
      LutFn fn = lut_fn();
      const LutPacked& packed = w->packed;
      parallel_for(ctx, static_cast<size_t>(cblocks * rblocks), [&](size_t item) {
        const int64_t cb = static_cast<int64_t>(item) / rblocks, rb = static_cast<int64_t>(item) % rblocks;
        fn(packed, A, Y, rb * row_block, std::min(rows, rb * row_block + row_block), cb * col_block,
           std::min(N, cb * col_block + col_block));
      });
    });
  }
};

// ---- DecodeWeights --------------------------------------------------------------------------------------
//
// Y[shape] = codebook[symbols of the OPXW blob]. Inputs: blob uint8 [bytes]; codebook T [A] (T float32,
// float16, int8 or uint8; output type T). Attribute: shape. Decoded once when the session is created (the
// blob is a constant); each run copies the decoded tensor out, since custom ops are not constant-folded.

struct DecodeWeightsKernel {
  std::string where;
  std::vector<int64_t> shape;
  std::vector<uint8_t> decoded;
  size_t elem_size = 0;
  bool constant = false;

  static size_t size_of(ONNXTensorElementDataType t) {
    switch (t) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return 4;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return 2;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return 1;
      default: return 0;
    }
  }

  void decode(const TensorView& blob, const TensorView& codebook) {
    if (blob.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) throw OpError(where + ": blob must be uint8");
    elem_size = size_of(codebook.type);
    if (elem_size == 0) throw OpError(where + ": codebook must be float32, float16, int8 or uint8");
    BlobInfo info;
    std::string problem = parse_blob(static_cast<const uint8_t*>(blob.data), blob.count(), &info);
    if (!problem.empty()) throw OpError(where + ": " + problem);
    uint64_t want = 1;
    for (int64_t d : shape) want *= static_cast<uint64_t>(d);
    if (info.count != want)
      throw OpError(where + ": blob holds " + std::to_string(info.count) + " values, shape " + shape_text(shape) + " needs " +
                    std::to_string(want));
    decoded.resize(static_cast<size_t>(want) * elem_size);
    problem = decode_blob(info, static_cast<const uint8_t*>(codebook.data), codebook.count(), elem_size, decoded.data());
    if (!problem.empty()) throw OpError(where + ": " + problem);
  }

  DecodeWeightsKernel(const OrtKernelInfo* info)
      : where("onnxpress.DecodeWeights node '" + node_name(info) + "'"), shape(attr_ints(info, "shape")) {
    for (int64_t d : shape)
      if (d < 0) throw OpError(where + ": attribute shape has a negative dimension");
    TensorView blob, codebook;
    if (constant_input(info, 0, &blob) && constant_input(info, 1, &codebook)) {
      decode(blob, codebook);
      constant = true;
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(where, [&] {
      Ort::KernelContext ctx(context);
      if (!constant) {
        TensorView blob, codebook;
        runtime_input(ctx, 0, &blob);
        runtime_input(ctx, 1, &codebook);
        decode(blob, codebook);
      }
      auto y = ctx.GetOutput(0, shape);
      if (!decoded.empty()) std::memcpy(y.GetTensorMutableRawData(), decoded.data(), decoded.size());
    });
  }
};

// ---- op definitions -------------------------------------------------------------------------------------

template <typename Kernel>
OrtStatusPtr create_kernel(const char* op, const OrtKernelInfo* info, void** out) {
  try {
    *out = new Kernel(info);
    return nullptr;
  } catch (const std::exception& e) {
    const std::string message = std::string(e.what()).find("onnxpress.") == 0
                                    ? std::string(e.what())
                                    : std::string("onnxpress.") + op + " node '" + node_name(info) + "': " + e.what();
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, message.c_str());
  }
}

struct SparseMatMulOp : Ort::CustomOpBase<SparseMatMulOp, SparseMatMulKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** out) const {
    return create_kernel<SparseMatMulKernel>("SparseMatMul", info, out);
  }
  const char* GetName() const { return "SparseMatMul"; }
  size_t GetInputTypeCount() const { return 5; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    if (i == 0 || i == 3 || i == 4) return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    if (i == 2) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // values: float32, float16 or int8
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i >= 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

struct LutMatMulOp : Ort::CustomOpBase<LutMatMulOp, LutMatMulKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** out) const {
    return create_kernel<LutMatMulKernel>("LutMatMul", info, out);
  }
  const char* GetName() const { return "LutMatMul"; }
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    if (i == 0 || i == 3) return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    if (i == 1) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // codebook: float32 or float16
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i >= 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// One registration per output type: onnxruntime picks the one whose codebook type matches.
struct DecodeWeightsOp : Ort::CustomOpBase<DecodeWeightsOp, DecodeWeightsKernel, true> {
  explicit DecodeWeightsOp(ONNXTensorElementDataType type) : type_(type) {}
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** out) const {
    return create_kernel<DecodeWeightsKernel>("DecodeWeights", info, out);
  }
  const char* GetName() const { return "DecodeWeights"; }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t i) const { return i == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : type_; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return type_; }

 private:
  ONNXTensorElementDataType type_;
};

struct Registry {
  SparseMatMulOp sparse;
  LutMatMulOp lut;
  DecodeWeightsOp decode_f32{ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  DecodeWeightsOp decode_f16{ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16};
  DecodeWeightsOp decode_i8{ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8};
  DecodeWeightsOp decode_u8{ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8};
  std::vector<Ort::CustomOpDomain> domains;  // kept alive for the sessions that use them
  std::mutex lock;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: sessions may outlive static destruction order
  return *r;
}

}  // namespace
}  // namespace opx

extern "C" {

__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                                 const OrtApiBase* api) {
  const OrtApi* ort = api->GetApi(ORT_API_VERSION);
  if (ort == nullptr) return nullptr;  // an older runtime: nothing we could report through
  Ort::InitApi(ort);
  return opx::guarded("onnxpress kernels", [&] {
    auto& r = opx::registry();
    std::lock_guard<std::mutex> guard(r.lock);
    Ort::CustomOpDomain domain("onnxpress");
    domain.Add(&r.sparse);
    domain.Add(&r.lut);
    domain.Add(&r.decode_f32);
    domain.Add(&r.decode_f16);
    domain.Add(&r.decode_i8);
    domain.Add(&r.decode_u8);
    Ort::UnownedSessionOptions(options).Add(domain);
    r.domains.push_back(std::move(domain));
  });
}

// Plain C entry points for Python (ctypes): the encoder, the decoder and the ISA in use.
__attribute__((visibility("default"))) int opx_isa() { return opx::active_isa(); }
__attribute__((visibility("default"))) int opx_cpu_isa() { return opx::cpu_isa(); }
__attribute__((visibility("default"))) int opx_has_vnni() { return opx::has_vnni() ? 1 : 0; }

__attribute__((visibility("default"))) int64_t opx_encode(const uint8_t* symbols, uint64_t count, uint32_t alphabet,
                                                          uint32_t ways, uint32_t prob_bits, uint8_t* out, uint64_t capacity) {
  if (alphabet < 1 || alphabet > 256 || ways < 1 || ways > 32 || prob_bits < 10 || prob_bits > 15) return -1;
  for (uint64_t i = 0; i < count; ++i)
    if (symbols[i] >= alphabet) return -2;
  std::vector<uint8_t> blob = opx::encode_blob(symbols, count, alphabet, ways, prob_bits);
  if (out == nullptr || capacity < blob.size()) return static_cast<int64_t>(blob.size());
  std::memcpy(out, blob.data(), blob.size());
  return static_cast<int64_t>(blob.size());
}

// Returns 0, or writes a message to `error` and returns 1.
__attribute__((visibility("default"))) int opx_decode(const uint8_t* blob, uint64_t size, const uint8_t* table,
                                                      uint64_t table_len, uint64_t elem_size, void* out, uint64_t out_count,
                                                      char* error, uint64_t error_size) {
  opx::BlobInfo info;
  std::string problem = opx::parse_blob(blob, size, &info);
  if (problem.empty() && info.count != out_count)
    problem = "blob holds " + std::to_string(info.count) + " values, expected " + std::to_string(out_count);
  if (problem.empty()) problem = opx::decode_blob(info, table, table_len, elem_size, out);
  if (problem.empty()) return 0;
  std::snprintf(error, error_size, "%s", problem.c_str());
  return 1;
}

__attribute__((visibility("default"))) int64_t opx_blob_count(const uint8_t* blob, uint64_t size) {
  opx::BlobInfo info;
  return opx::parse_blob(blob, size, &info).empty() ? static_cast<int64_t>(info.count) : -1;
}

}  // extern "C"
