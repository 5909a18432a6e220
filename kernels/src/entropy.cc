// Interleaved rANS (32-bit states, 16-bit renormalization) and CRC32C for "OPXW" blobs; see entropy.h.
#include "entropy.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define OPX_X86 1
#endif

namespace opx {
namespace {

constexpr uint32_t kStateLow = 1u << 16;  // states live in [2^16, 2^32)

uint32_t crc32c_table(uint32_t crc, const uint8_t* p, size_t n) {
  static uint32_t table[256];
  static bool ready = false;
  if (!ready) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      table[i] = c;
    }
    ready = true;
  }
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

#ifdef OPX_X86
__attribute__((target("sse4.2"))) uint32_t crc32c_hw(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = crc;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    c = _mm_crc32_u64(c, word);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; i < n; ++i) c32 = _mm_crc32_u8(c32, p[i]);
  return c32;
}
#endif

uint16_t read_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t read_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t read_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Per slot: the output value and (freq << 16 | slot - cumulative start), so a symbol costs two table reads.
template <typename T>
struct SlotTables {
  std::vector<T> value;
  std::vector<uint32_t> step;
};

template <typename T>
SlotTables<T> slot_tables(const BlobInfo& info, const T* table) {
  const uint32_t total = 1u << info.prob_bits;
  SlotTables<T> t{std::vector<T>(total), std::vector<uint32_t>(total)};
  uint32_t start = 0;
  for (uint32_t s = 0; s < info.alphabet; ++s) {
    const uint32_t f = info.freq[s];
    for (uint32_t j = 0; j < f; ++j) {
      t.value[start + j] = table[s];
      t.step[start + j] = (f << 16) | j;
    }
    start += f;
  }
  return t;
}

// W interleaved states in registers; a round of W symbols reads at most W words, so rounds run unchecked
// (branch-free renormalization) while W words remain, and the tail runs checked.
template <typename T, uint32_t W>
std::string decode_ways(const BlobInfo& info, const SlotTables<T>& t, T* out) {
  const uint32_t pb = info.prob_bits, mask = (1u << pb) - 1;
  const T* value = t.value.data();
  const uint32_t* step = t.step.data();
  const uint8_t* words = info.payload;
  const uint64_t n_words = info.payload_words, count = info.count;
  uint32_t state[W];
  for (uint32_t w = 0; w < W; ++w) state[w] = read_u32(info.states + 4 * w);
  uint64_t pos = 0, i = 0;
  for (; i + W <= count && pos + W <= n_words; i += W) {
    for (uint32_t w = 0; w < W; ++w) {
      uint32_t x = state[w];
      const uint32_t slot = x & mask, st = step[slot];
      out[i + w] = value[slot];
      x = (st >> 16) * (x >> pb) + (st & 0xffff);
      const uint32_t need = x < kStateLow;
      const uint32_t word = read_u16(words + 2 * pos);
      x = need ? (x << 16) | word : x;
      pos += need;
      state[w] = x;
    }
  }
  for (; i < count; ++i) {
    const uint32_t w = static_cast<uint32_t>(i % W);
    uint32_t x = state[w];
    const uint32_t slot = x & mask, st = step[slot];
    out[i] = value[slot];
    x = (st >> 16) * (x >> pb) + (st & 0xffff);
    if (x < kStateLow) {
      if (pos >= n_words) return "the payload ends before the last symbol (truncated blob)";
      x = (x << 16) | read_u16(words + 2 * pos);
      ++pos;
    }
    state[w] = x;
  }
  if (pos != n_words) return "payload words left over after the last symbol (corrupted blob)";
  for (uint32_t w = 0; w < W; ++w)
    if (state[w] != kStateLow) return "a decoder state did not return to its start value (corrupted blob)";
  return "";
}

template <typename T>
std::string decode_typed(const BlobInfo& info, const T* table, T* out) {
  const SlotTables<T> t = slot_tables(info, table);
  switch (info.ways) {
    case 1: return decode_ways<T, 1>(info, t, out);
    case 2: return decode_ways<T, 2>(info, t, out);
    case 4: return decode_ways<T, 4>(info, t, out);
    case 8: return decode_ways<T, 8>(info, t, out);
    case 16: return decode_ways<T, 16>(info, t, out);
    case 32: return decode_ways<T, 32>(info, t, out);
    default: return "blob has " + std::to_string(info.ways) + " states; supported: 1, 2, 4, 8, 16, 32";
  }
}

}  // namespace

uint32_t crc32c(const uint8_t* data, size_t size) {
#ifdef OPX_X86
  if (__builtin_cpu_supports("sse4.2")) return ~crc32c_hw(0xFFFFFFFFu, data, size);
#endif
  return ~crc32c_table(0xFFFFFFFFu, data, size);
}

bool looks_like_blob(const uint8_t* data, size_t size) {
  return size >= kBlobHeader && std::memcmp(data, "OPXW", 4) == 0;
}

std::string parse_blob(const uint8_t* data, size_t size, BlobInfo* info) {
  if (!looks_like_blob(data, size)) return "not an OPXW blob (no magic, or shorter than its 32-byte header)";
  if (data[4] != 1) return "blob version " + std::to_string(data[4]) + " is not supported (expected 1)";
  if (data[5] != 1) return "blob codec " + std::to_string(data[5]) + " is not supported (expected 1, rANS)";
  info->ways = data[6];
  info->prob_bits = data[7];
  info->alphabet = read_u16(data + 8);
  info->payload_words = read_u32(data + 12);
  info->count = read_u64(data + 16);
  if (info->ways < 1 || info->ways > 32 || (info->ways & (info->ways - 1)) != 0)
    return "blob has " + std::to_string(info->ways) + " states (expected 1, 2, 4, 8, 16 or 32)";
  if (info->prob_bits < 10 || info->prob_bits > 15) return "blob probability precision is out of range (10..15 bits)";
  if (info->alphabet < 1 || info->alphabet > 256) return "blob alphabet size is out of range (1..256)";
  const uint64_t expected = uint64_t{kBlobHeader} + 2ull * info->alphabet + 4ull * info->ways + 2ull * info->payload_words;
  if (expected != size) {
    return "blob is " + std::to_string(size) + " bytes, its header says " + std::to_string(expected) +
           " (truncated or corrupted)";
  }
  if (crc32c(data + kBlobHeader, size - kBlobHeader) != read_u32(data + 24)) return "checksum mismatch (corrupted blob)";
  info->freq = reinterpret_cast<const uint16_t*>(data + kBlobHeader);  // checked below via memcpy reads
  uint64_t sum = 0;
  for (uint32_t s = 0; s < info->alphabet; ++s) sum += read_u16(data + kBlobHeader + 2 * s);
  if (sum != (1ull << info->prob_bits)) return "blob frequencies do not sum to 2^prob_bits (corrupted blob)";
  info->states = data + kBlobHeader + 2 * info->alphabet;
  info->payload = info->states + 4 * info->ways;
  return "";
}

std::string decode_blob(const BlobInfo& info, const uint8_t* table, size_t table_len, size_t elem_size, void* out) {
  std::vector<uint16_t> freq(info.alphabet);
  std::memcpy(freq.data(), info.freq, 2 * info.alphabet);
  for (uint32_t s = 0; s < info.alphabet; ++s)
    if (freq[s] != 0 && s >= table_len) {
      return "symbol " + std::to_string(s) + " occurs in the blob but the codebook has " + std::to_string(table_len) +
             " entries (index out of codebook)";
    }
  BlobInfo aligned = info;
  aligned.freq = freq.data();
  switch (elem_size) {
    case 1: return decode_typed(aligned, table, static_cast<uint8_t*>(out));
    case 2: return decode_typed(aligned, reinterpret_cast<const uint16_t*>(table), static_cast<uint16_t*>(out));
    case 4: return decode_typed(aligned, reinterpret_cast<const uint32_t*>(table), static_cast<uint32_t*>(out));
    case 8: return decode_typed(aligned, reinterpret_cast<const uint64_t*>(table), static_cast<uint64_t*>(out));
    default: return "unsupported element size";
  }
}

std::vector<uint8_t> encode_blob(const uint8_t* symbols, uint64_t count, uint32_t alphabet, uint32_t ways,
                                 uint32_t prob_bits) {
  const uint32_t total = 1u << prob_bits;
  std::vector<uint64_t> counts(alphabet, 0);
  for (uint64_t i = 0; i < count; ++i) ++counts[symbols[i]];
  // Quantize frequencies to sum to `total`, every present symbol at least 1.
  std::vector<uint32_t> freq(alphabet, 0);
  uint64_t sum = 0;
  for (uint32_t s = 0; s < alphabet; ++s) {
    if (counts[s] == 0) continue;
    freq[s] = std::max<uint32_t>(1, static_cast<uint32_t>((counts[s] * total + count / 2) / std::max<uint64_t>(count, 1)));
    sum += freq[s];
  }
  if (count == 0) {
    freq[0] = total;
    sum = total;
  }
  while (sum != total) {  // adjust the symbol whose cost changes least: the most frequent ones
    uint32_t best = 0;
    for (uint32_t s = 1; s < alphabet; ++s)
      if (freq[s] > freq[best] || (freq[best] <= 1 && freq[s] > 1)) best = s;
    if (sum > total) {
      const uint64_t d = std::min<uint64_t>(sum - total, freq[best] - 1);
      freq[best] -= static_cast<uint32_t>(d);
      sum -= d;
    } else {
      freq[best] += static_cast<uint32_t>(total - sum);
      sum = total;
    }
  }
  std::vector<uint32_t> cum(alphabet + 1, 0);
  for (uint32_t s = 0; s < alphabet; ++s) cum[s + 1] = cum[s] + freq[s];
  std::vector<uint32_t> state(ways, kStateLow);
  std::vector<uint16_t> words;
  words.reserve(count / 2 + 16);
  for (uint64_t i = count; i-- > 0;) {
    const uint32_t w = static_cast<uint32_t>(i % ways), s = symbols[i], f = freq[s];
    uint32_t x = state[w];
    const uint64_t x_max = (uint64_t{kStateLow >> prob_bits} << 16) * f;
    if (x >= x_max) {
      words.push_back(static_cast<uint16_t>(x & 0xffff));
      x >>= 16;
    }
    state[w] = ((x / f) << prob_bits) + (x % f) + cum[s];
  }
  std::reverse(words.begin(), words.end());
  std::vector<uint8_t> out(kBlobHeader + 2 * alphabet + 4 * ways + 2 * words.size(), 0);
  std::memcpy(out.data(), "OPXW", 4);
  out[4] = 1;
  out[5] = 1;
  out[6] = static_cast<uint8_t>(ways);
  out[7] = static_cast<uint8_t>(prob_bits);
  const uint16_t a16 = static_cast<uint16_t>(alphabet);
  const uint32_t nw = static_cast<uint32_t>(words.size());
  std::memcpy(out.data() + 8, &a16, 2);
  std::memcpy(out.data() + 12, &nw, 4);
  std::memcpy(out.data() + 16, &count, 8);
  uint8_t* p = out.data() + kBlobHeader;
  for (uint32_t s = 0; s < alphabet; ++s) {
    const uint16_t f = static_cast<uint16_t>(freq[s]);  // <= 2^15 fits
    std::memcpy(p + 2 * s, &f, 2);
  }
  p += 2 * alphabet;
  std::memcpy(p, state.data(), 4 * ways);
  p += 4 * ways;
  std::memcpy(p, words.data(), 2 * words.size());
  const uint32_t crc = crc32c(out.data() + kBlobHeader, out.size() - kBlobHeader);
  std::memcpy(out.data() + 24, &crc, 4);
  return out;
}

}  // namespace opx
