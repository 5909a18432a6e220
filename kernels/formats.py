"""The weight inputs of the ``onnxpress`` ops, made from ordinary arrays (and read back, for checks).

The formats are the kernels' own layouts (``src/layouts.h``), so onnxruntime's copy of an initializer is
the only copy at run time:

- SparseMatMul: ``values`` [ceil(N/16), K/m, n, 16] (fp32, fp16 or int8; padded columns zero) and
  ``indices`` uint8 [ceil(N/16), K/m, n, 4] for m = 4 (a little-endian uint32 of 16 2-bit positions) or
  [..., 16] for m = 8 (a byte each); int8 values carry per-column ``scales`` [N].
- LutMatMul: ``codes`` uint8 [N, ceil(K/B) * 64], column-major blocks of 64 bytes read as 16 little-endian
  uint32 lanes; lane i holds code 16 q + i of the block at bits 4q (B = 128 codes; 3-bit codes use nibbles)
  or 2q (B = 256, 2 bits); or an OPXW blob of the N*K codes, column-major.
- DecodeWeights: an OPXW blob (rANS; ``src/entropy.h``) and a codebook its symbols index.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
from onnxpress.irpasses.core.errors import DataError

TILE = 16


@dataclass
class SparseWeights:
    """SparseMatMul's weight inputs and attributes."""

    values: np.ndarray
    indices: np.ndarray
    scales: np.ndarray | None
    N: int
    m: int
    n: int

    @property
    def K(self) -> int:
        return self.values.shape[1] * self.m

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.indices.nbytes + (0 if self.scales is None else self.scales.nbytes)


def nm_positions(weight: np.ndarray, m: int, n: int, name: str = "weight") -> np.ndarray:
    """Positions [K/m, n, N] (increasing) of the at most n non-zeros of each group of m rows of each column."""
    K, N = weight.shape
    if K % m:
        raise DataError(f"{name}: K={K} is not a multiple of m={m}", hint=f"{n}:{m} sparsity needs whole groups along K")
    groups = weight.reshape(K // m, m, N)
    nonzero = groups != 0
    counts = nonzero.sum(axis=1)
    if (counts > n).any():
        g, col = np.argwhere(counts > n)[0]
        raise DataError(f"{name}: column {col}, rows {g * m}..{g * m + m - 1} hold {counts[g, col]} non-zeros, more than {n} of {m}",
                        hint="prune the weight to N:M first (the prune pass)")
    position = np.arange(m).reshape(1, m, 1)
    key = np.where(nonzero, position, m + position)  # non-zeros first, then zeros, each in order
    chosen = np.sort(np.argsort(key, axis=1, kind="stable")[:, :n, :], axis=1)
    return chosen.astype(np.uint8)


def magnitude_nm(weight: np.ndarray, m: int = 4, n: int = 2) -> np.ndarray:
    """W [K, N] with all but the n largest |values| of each group of m rows (per column) set to zero: the plain
    magnitude projection onto N:M, for tests and benchmarks (the prune pass chooses better)."""
    K, N = weight.shape
    groups = np.asarray(weight, dtype=np.float32).reshape(K // m, m, N)
    keep = np.argsort(-np.abs(groups), axis=1, kind="stable")[:, :n, :]
    mask = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(mask, keep, True, axis=1)
    return (groups * mask).reshape(K, N)


def pack_sparse(weight: np.ndarray, m: int = 4, n: int = 2, value_dtype: str = "float32", name: str = "weight") -> SparseWeights:
    """SparseMatMul inputs for W [K, N] whose groups of m rows keep at most n non-zeros per column."""
    if m not in (4, 8) or not 1 <= n < m:
        raise DataError(f"{name}: {n}:{m} is not supported", hint="m is 4 or 8, 1 <= n < m")
    weight = np.asarray(weight, dtype=np.float32)
    if weight.ndim != 2:
        raise DataError(f"{name}: expected a 2-D weight [K, N], got shape {weight.shape}")
    K, N = weight.shape
    positions = nm_positions(weight, m, n, name)  # [G, n, N]
    G = K // m
    kept = np.take_along_axis(weight.reshape(G, m, N), positions.astype(np.int64), axis=1)  # [G, n, N]
    scales = None
    if value_dtype == "int8":
        scales = np.abs(kept).max(axis=(0, 1)).astype(np.float32) / 127.0
        scales[scales == 0] = 1.0
        kept = np.clip(np.rint(kept / scales), -127, 127).astype(np.int8)
    elif value_dtype == "float16":
        kept = kept.astype(np.float16)
    elif value_dtype != "float32":
        raise DataError(f"{name}: value dtype {value_dtype!r} is not supported", hint="float32, float16 or int8")
    tiles = -(-N // TILE)
    pad = tiles * TILE - N
    kept = np.pad(kept, ((0, 0), (0, 0), (0, pad)))
    positions = np.pad(positions, ((0, 0), (0, 0), (0, pad)), constant_values=0)
    # Padded columns must still hold increasing positions: 0, 1, ..., n-1.
    if pad:
        positions[:, :, N:] = np.arange(n, dtype=np.uint8).reshape(1, n, 1)
    values = np.ascontiguousarray(kept.reshape(G, n, tiles, TILE).transpose(2, 0, 1, 3))
    lanes = positions.reshape(G, n, tiles, TILE).transpose(2, 0, 1, 3)  # [T, G, n, 16]
    if m == 4:
        shifts = (2 * np.arange(TILE, dtype=np.uint32)).reshape(1, 1, 1, TILE)
        words = (lanes.astype(np.uint32) << shifts).sum(axis=-1, dtype=np.uint32)
        indices = np.ascontiguousarray(words.astype("<u4")).view(np.uint8).reshape(tiles, G, n, 4)
    else:
        indices = np.ascontiguousarray(lanes.astype(np.uint8))
    return SparseWeights(values, indices, scales, N, m, n)


def unpack_sparse(w: SparseWeights) -> np.ndarray:
    """The dense W [K, N] that SparseMatMul's inputs stand for."""
    tiles, G, n, _ = w.values.shape
    if w.m == 4:
        words = np.ascontiguousarray(w.indices).view("<u4").reshape(tiles, G, n, 1)
        lanes = (words >> (2 * np.arange(TILE, dtype=np.uint32))) & 3
    else:
        lanes = w.indices.astype(np.uint32)
    values = w.values.astype(np.float32)
    if w.scales is not None:
        scales = np.pad(w.scales, (0, tiles * TILE - w.N)).reshape(tiles, 1, 1, TILE)
        values = values * scales
    dense = np.zeros((tiles, G, w.m, TILE), dtype=np.float32)
    t, g, s, lane = np.indices(values.shape)
    dense[t, g, lanes.astype(np.int64), lane] = values
    return dense.transpose(1, 2, 0, 3).reshape(G * w.m, tiles * TILE)[:, : w.N]


# ---- codebooks ------------------------------------------------------------------------------------------

def lut_block(bits: int) -> int:
    """Codes per 64-byte block: 16 uint32 lanes of 8 nibbles (or 16 2-bit codes)."""
    return 256 if bits == 2 else 128


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """LutMatMul's packed codes [N, col_bytes] from codes [K, N] (values < 2**bits)."""
    codes = np.asarray(codes)
    if bits not in (2, 3, 4):
        raise DataError(f"codes: {bits}-bit codes are not supported", hint="2, 3 or 4 bits")
    if codes.size and int(codes.max()) >= 1 << bits:
        raise DataError(f"codes: a code is {int(codes.max())}, out of a {1 << bits}-entry codebook")
    K, N = codes.shape
    block, shift = lut_block(bits), (2 if bits == 2 else 4)
    slices = block // 16
    blocks = -(-K // block)
    padded = np.zeros((N, blocks * block), dtype=np.uint32)
    padded[:, :K] = codes.T
    by_slice = padded.reshape(N, blocks, slices, 16)  # code 16 q + i of a block -> lane i, bits shift * q
    lanes = np.zeros((N, blocks, 16), dtype=np.uint32)
    for q in range(slices):
        lanes |= by_slice[:, :, q, :] << np.uint32(shift * q)
    return np.ascontiguousarray(lanes.astype("<u4")).view(np.uint8).reshape(N, blocks * 64)


def unpack_codes(packed: np.ndarray, K: int, bits: int) -> np.ndarray:
    """Codes [K, N] from LutMatMul's packed codes."""
    N = packed.shape[0]
    shift, mask = (2, 3) if bits == 2 else (4, 15)
    lanes = np.ascontiguousarray(packed).view("<u4").reshape(N, -1, 16)
    slices = [(lanes >> np.uint32(shift * q)) & np.uint32(mask) for q in range(lut_block(bits) // 16)]
    return np.stack(slices, axis=2).reshape(N, -1)[:, :K].T.astype(np.uint8)


def codebook_weight(codes: np.ndarray, codebook: np.ndarray, group_size: int = 0) -> np.ndarray:
    """Dense W [K, N] = codebook[scope(k, n)][codes[k, n]] for [1, L], [N, L] or [K/group_size, N, L] books."""
    K, N = codes.shape
    book = np.asarray(codebook, dtype=np.float32)
    columns = np.arange(N).reshape(1, N)
    if book.ndim == 2 and book.shape[0] == 1:
        return book[0][codes]
    if book.ndim == 2:
        return book[columns, codes]
    groups = (np.arange(K) // group_size).reshape(K, 1)
    return book[groups, columns, codes]


# ---- entropy-coded blobs --------------------------------------------------------------------------------

def encode(symbols: np.ndarray, alphabet: int | None = None, ways: int = 4, prob_bits: int = 12) -> bytes:
    """An OPXW blob (interleaved rANS) of uint8 symbols, flattened in C order."""
    from onnxpress.kernels import native

    flat = np.ascontiguousarray(np.asarray(symbols).reshape(-1))
    if flat.dtype != np.uint8:
        if flat.size and (flat.min() < 0 or flat.max() > 255):
            raise DataError("encode: symbols must fit in uint8")
        flat = flat.astype(np.uint8)
    alphabet = alphabet or (int(flat.max()) + 1 if flat.size else 1)
    lib = native()
    size = lib.opx_encode(flat.ctypes.data, flat.size, alphabet, ways, prob_bits, None, 0)
    if size < 0:
        raise DataError(f"encode: invalid arguments (alphabet {alphabet}, ways {ways}, prob_bits {prob_bits}) or a symbol >= alphabet")
    out = np.empty(size, dtype=np.uint8)
    lib.opx_encode(flat.ctypes.data, flat.size, alphabet, ways, prob_bits, out.ctypes.data, size)
    return out.tobytes()


def decode(blob: bytes | np.ndarray, codebook: np.ndarray, shape: tuple[int, ...], name: str = "blob") -> np.ndarray:
    """codebook[symbols] in ``shape``: the decoder DecodeWeights runs at session load."""
    from onnxpress.kernels import native

    data = np.frombuffer(bytes(blob), dtype=np.uint8) if not isinstance(blob, np.ndarray) else np.ascontiguousarray(blob, dtype=np.uint8)
    table = np.ascontiguousarray(codebook).reshape(-1)
    out = np.empty(shape, dtype=table.dtype)
    error = ctypes.create_string_buffer(512)
    if native().opx_decode(data.ctypes.data, data.size, table.ctypes.data, table.size, table.itemsize, out.ctypes.data,
                           out.size, error, len(error)):
        raise DataError(f"{name}: {error.value.decode()}")
    return out
