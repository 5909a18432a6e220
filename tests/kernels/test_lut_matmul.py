"""LutMatMul's refusals of bad inputs (the self-test covers its arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest
from onnxpress.kernels import formats, graphs, reference


def _codes(K: int, N: int, bits: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1 << bits, (K, N)).astype(np.uint8)


def test_codes_round_trip() -> None:
    for bits in (2, 3, 4):
        codes = _codes(300, 7, bits)
        assert np.array_equal(formats.unpack_codes(formats.pack_codes(codes, bits), 300, bits), codes)


def test_exact_against_the_dense_weight_of_the_same_codebook() -> None:
    codes = _codes(512, 64, 4)
    book = np.sort(np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32), axis=1)
    a = np.random.default_rng(2).standard_normal((1, 512)).astype(np.float32)
    y = graphs.session(graphs.lut_matmul(formats.pack_codes(codes, 4), book, 512, 64, 4)).run(None, {"A": a})[0]
    dense = formats.codebook_weight(codes, book)
    ref = a.astype(np.float64) @ dense.astype(np.float64)
    assert np.abs(y - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize(("change", "message"), [
    ("codes shape", "codes has shape"),
    ("3-bit code out of range", "is >= 8 .index out of codebook."),
    ("codebook shape", "codebook has shape"),
    ("corrupted blob", "checksum mismatch"),
    ("truncated blob", "truncated or corrupted"),
    ("group size", "group_size=20 must be 0 or a multiple of 16"),
])
def test_bad_inputs_are_refused_at_load(change: str, message: str) -> None:
    K, N, bits, group = 64, 8, 3, 0
    codes = _codes(K, N, bits)
    packed = formats.pack_codes(codes, bits)
    book = np.zeros((N, 8), np.float32)
    source: np.ndarray | bytes = packed
    if change == "codes shape":
        source = packed[:, :-1]
    elif change == "3-bit code out of range":
        source = packed.copy()
        source[0, 0] |= 0x08
    elif change == "codebook shape":
        book = np.zeros((N + 1, 8), np.float32)
    elif change in ("corrupted blob", "truncated blob"):
        blob = bytearray(formats.encode(codes.T.copy(), 8))
        if change == "corrupted blob":
            blob[-3] ^= 0x10
        else:
            del blob[-2:]
        source = bytes(blob)
    elif change == "group size":
        group, book = 20, np.zeros((4, N, 8), np.float32)
    with pytest.raises(Exception, match=message) as caught:
        graphs.session(graphs.lut_matmul(source, book, K, N, bits, group, name="proj"))
    assert "onnxpress.LutMatMul node 'proj'" in str(caught.value)


def test_codes_as_an_entropy_coded_blob_give_the_same_output() -> None:
    codes = _codes(200, 12, 4)
    book = np.random.default_rng(3).standard_normal((1, 16)).astype(np.float32)
    a = np.random.default_rng(4).standard_normal((3, 200)).astype(np.float32)
    packed = formats.pack_codes(codes, 4)
    blob = formats.encode(codes.T.copy(), 16)
    y_blob = graphs.session(graphs.lut_matmul(blob, book, 200, 12, 4)).run(None, {"A": a})[0]
    np.testing.assert_allclose(y_blob, reference.lut_matmul(a, packed, book, 200, 4), rtol=1e-5, atol=1e-5)
