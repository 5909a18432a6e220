// Entropy-coded weight blobs ("OPXW" v1): interleaved rANS over a byte alphabet, CRC32C-checked.
//
// Layout (little-endian):
//   0  magic "OPXW"          4  version = 1        5  codec = 1 (rANS, 32-bit state, 16-bit words)
//   6  ways (interleaved states: 1, 2, 4, 8, 16 or 32)  7  prob_bits (10..15)
//   8  alphabet size A (u16, 1..256)             10  reserved (0)
//   12 payload words (u32)                        16 symbol count (u64)
//   24 CRC32C of every byte after the header (u32) 28 reserved (0)
//   32 freq[A] (u16, sum = 1 << prob_bits)  then  states[ways] (u32)  then  payload (u16 words)
// Symbol i is coded by state i % ways. A decoder checks the length, the CRC, that every state returns to
// its start value and that every payload word was read: a corrupted blob is refused, never decoded wrong.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace opx {

constexpr uint32_t kBlobHeader = 32;

uint32_t crc32c(const uint8_t* data, size_t size);

struct BlobInfo {
  uint32_t ways = 0, prob_bits = 0, alphabet = 0, payload_words = 0;
  uint64_t count = 0;
  const uint16_t* freq = nullptr;
  const uint8_t* states = nullptr;
  const uint8_t* payload = nullptr;
};

bool looks_like_blob(const uint8_t* data, size_t size);
// Empty string when valid; otherwise what is wrong.
std::string parse_blob(const uint8_t* data, size_t size, BlobInfo* info);
// Decodes `count` symbols, writing table[symbol] (elem_size bytes each) to out. Symbols >= table_len are an
// error. Empty string on success.
std::string decode_blob(const BlobInfo& info, const uint8_t* table, size_t table_len, size_t elem_size, void* out);
std::vector<uint8_t> encode_blob(const uint8_t* symbols, uint64_t count, uint32_t alphabet, uint32_t ways,
                                 uint32_t prob_bits);

}  // namespace opx
