"""numpy references for the ``onnxpress`` ops: what each computes, written plainly, for the tests.

The blob decoder here is an independent pure-Python reading of the OPXW format (``src/entropy.h``), so a
test compares two implementations of the format, not the C++ decoder with itself. It is slow: small blobs.
"""

from __future__ import annotations

import struct

import numpy as np
from onnxpress.kernels.formats import (
    SparseWeights,
    codebook_weight,
    unpack_codes,
    unpack_sparse,
)


def sparse_matmul(a: np.ndarray, w: SparseWeights, bias: np.ndarray | None = None) -> np.ndarray:
    y = a.astype(np.float64) @ unpack_sparse(w).astype(np.float64)
    return (y + (0 if bias is None else bias)).astype(np.float32)


def lut_matmul(a: np.ndarray, packed_codes: np.ndarray, codebook: np.ndarray, K: int, bits: int, group_size: int = 0,
               bias: np.ndarray | None = None) -> np.ndarray:
    weight = codebook_weight(unpack_codes(packed_codes, K, bits), codebook, group_size)
    y = a.astype(np.float64) @ weight.astype(np.float64)
    return (y + (0 if bias is None else bias)).astype(np.float32)


def lut_matmul_int8(a: np.ndarray, packed_codes: np.ndarray, codebook: np.ndarray, K: int, bits: int, group_size: int = 0,
                    bias: np.ndarray | None = None) -> np.ndarray:
    """LutMatMul at accuracy level 4, simulated: each table rounded to int8 with scale max|entry|/127, the
    activations per row and span of 512 with scale max|a|/127 (float32 arithmetic, round half to even)."""
    codes = unpack_codes(packed_codes, K, bits)
    book = np.asarray(codebook, dtype=np.float32)
    scale = np.abs(book).max(axis=-1, keepdims=True).astype(np.float32) / np.float32(127)
    scale[scale == 0] = 1
    quantized = np.clip(np.rint(book / scale), -127, 127).astype(np.float32) * scale  # dequantized tables
    weight = codebook_weight(codes, quantized, group_size).astype(np.float64)
    rows = a.reshape(-1, K).astype(np.float32)
    spans = -(-K // 512)
    padded = np.zeros((rows.shape[0], spans * 512), np.float32)
    padded[:, :K] = rows
    grouped = padded.reshape(rows.shape[0], spans, 512)
    a_scale = np.abs(grouped).max(axis=2, keepdims=True) / np.float32(127)
    a_scale[a_scale == 0] = 1
    a_q = np.clip(np.rint(grouped * (np.float32(1) / a_scale)), -127, 127) * a_scale
    y = a_q.reshape(rows.shape[0], -1)[:, :K].astype(np.float64) @ weight
    y = y + (0 if bias is None else bias)
    return y.reshape(*a.shape[:-1], -1).astype(np.float32)


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def decode_weights(blob: bytes, codebook: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """codebook[symbols] from an OPXW v1 blob; raises ValueError on anything malformed."""
    if len(blob) < 32 or blob[:4] != b"OPXW":
        raise ValueError("not an OPXW blob")
    version, codec, ways, prob_bits, alphabet, _, words, count, crc, _ = struct.unpack_from("<BBBBHHIQII", blob, 4)
    if (version, codec) != (1, 1):
        raise ValueError("unsupported version or codec")
    if len(blob) != 32 + 2 * alphabet + 4 * ways + 2 * words:
        raise ValueError("length does not match the header")
    if _crc32c(blob[32:]) != crc:
        raise ValueError("checksum mismatch")
    freq = struct.unpack_from(f"<{alphabet}H", blob, 32)
    if sum(freq) != 1 << prob_bits:
        raise ValueError("frequencies do not sum to 2^prob_bits")
    cum = np.concatenate([[0], np.cumsum(freq)]).astype(np.int64)
    slot_symbol = np.repeat(np.arange(alphabet), freq)
    states = list(struct.unpack_from(f"<{ways}I", blob, 32 + 2 * alphabet))
    payload = struct.unpack_from(f"<{words}H", blob, 32 + 2 * alphabet + 4 * ways)
    mask, pos, symbols = (1 << prob_bits) - 1, 0, np.empty(count, dtype=np.int64)
    for i in range(count):
        w = i % ways
        x = states[w]
        slot = x & mask
        s = int(slot_symbol[slot])
        x = freq[s] * (x >> prob_bits) + slot - int(cum[s])
        if x < 1 << 16:
            if pos >= words:
                raise ValueError("payload ends early")
            x = (x << 16) | payload[pos]
            pos += 1
        states[w] = x
        symbols[i] = s
    if pos != words or any(x != 1 << 16 for x in states):
        raise ValueError("corrupted payload")
    if symbols.size and symbols.max() >= len(codebook):
        raise ValueError("index out of codebook")
    return np.asarray(codebook)[symbols].reshape(shape)
