"""DecodeWeights and the OPXW format: the C++ decoder against an independent Python reading of the format,
every output type, and corrupted blobs refused with the tensor named, never decoded wrong."""

from __future__ import annotations

import numpy as np
import pytest
from onnxpress.kernels import formats, graphs, reference


def _symbols(count: int = 4000, alphabet: int = 16, seed: int = 0) -> np.ndarray:
    p = np.exp(-0.5 * ((np.arange(alphabet) - alphabet / 2) / 3) ** 2)
    return np.random.default_rng(seed).choice(alphabet, size=count, p=p / p.sum()).astype(np.uint8)


@pytest.mark.parametrize("ways", [1, 4, 8, 32])
def test_round_trip_agrees_with_the_python_reference(ways: int) -> None:
    symbols = _symbols(3001)
    blob = formats.encode(symbols, 16, ways=ways)
    book = np.arange(16, dtype=np.int64) * 3
    np.testing.assert_array_equal(reference.decode_weights(blob, book, symbols.shape), book[symbols])
    np.testing.assert_array_equal(formats.decode(blob, book, symbols.shape), book[symbols])


def test_entropy_coding_is_shorter_than_packed_nibbles_on_skewed_codes() -> None:
    symbols = _symbols(100_000)
    assert len(formats.encode(symbols, 16)) < 0.95 * symbols.size / 2


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, np.uint8])
def test_every_output_type_in_onnxruntime(dtype: type) -> None:
    symbols = _symbols(600, 7)
    book = (np.arange(7) - 3).astype(dtype)
    blob = formats.encode(symbols, 7)
    y = graphs.session(graphs.decode_weights(blob, book, (20, 30))).run(None, {"A": np.zeros((20, 30), np.float32)})[0]
    np.testing.assert_array_equal(y, book[symbols].astype(np.float32).reshape(20, 30))


def test_single_symbol_and_empty_tensors() -> None:
    for symbols in (np.full(100, 2, np.uint8), np.zeros(0, np.uint8)):
        blob = formats.encode(symbols, 3)
        np.testing.assert_array_equal(formats.decode(blob, np.arange(3, dtype=np.float32), symbols.shape), symbols.astype(np.float32))


@pytest.mark.parametrize(("damage", "message"), [
    ("flip a payload bit", "checksum mismatch"),
    ("truncate", "truncated or corrupted"),
    ("codebook too short", "index out of codebook"),
    ("wrong shape", "holds 4000 values"),
    ("not a blob", "not an OPXW blob"),
    ("payload forged with a valid checksum", r"(corrupted|truncated) blob"),
])
def test_damaged_blobs_are_refused_naming_the_tensor(damage: str, message: str) -> None:
    symbols = _symbols()
    blob = bytearray(formats.encode(symbols, 16))
    book = np.arange(16, dtype=np.float32)
    shape = (40, 100)
    if damage == "flip a payload bit":
        blob[-5] ^= 0x04
    elif damage == "truncate":
        del blob[-10:]
    elif damage == "codebook too short":
        book = book[:10]
    elif damage == "wrong shape":
        shape = (40, 99)
    elif damage == "not a blob":
        blob[0:4] = b"ABCD"
    elif damage == "payload forged with a valid checksum":
        import struct

        blob[-5] ^= 0x04
        from onnxpress.kernels.reference import _crc32c

        struct.pack_into("<I", blob, 24, _crc32c(bytes(blob[32:])))
    with pytest.raises(Exception, match=message) as caught:
        graphs.session(graphs.decode_weights(bytes(blob), book, shape, name="emb.codes"))
    assert "onnxpress.DecodeWeights node 'emb.codes'" in str(caught.value)
    with pytest.raises(Exception, match=message):
        formats.decode(bytes(blob), book, shape)
