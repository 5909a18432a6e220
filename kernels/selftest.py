"""Every op on odd shapes, row counts and thread counts against the numpy references, in this process's
instruction set: ``ONNXPRESS_KERNELS_ISA=avx2 python -m onnxpress.kernels selftest`` checks the AVX2 path on
an AVX-512 machine. Returns the failures (empty: all good)."""

from __future__ import annotations

import itertools

import numpy as np
from onnxpress.kernels import formats, graphs, reference

TOLERANCE = 1e-5
"""Relative to the output's largest magnitude: float32 sums in another order, nothing more."""


def _relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / max(float(np.abs(ref).max()), 1e-30)) if ref.size else 0.0


def sparse_cases() -> list[tuple[int, int, int, int, str, tuple[int, ...], int, bool]]:
    """(K, N, m, n, value dtype, A's leading shape, threads, bias)."""
    shapes = [(4, 1, 4, 2), (8, 17, 4, 2), (64, 33, 4, 1), (96, 40, 4, 3), (64, 16, 8, 4), (40, 23, 8, 2), (256, 100, 4, 2)]
    leading = [(1,), (3,), (8,), (2, 9), (33,)]
    cases = []
    for (K, N, m, n), dtype, lead, threads in itertools.product(shapes, ("float32", "float16", "int8"), leading, (1, 2)):
        cases.append((K, N, m, n, dtype, lead, threads, (K + N + threads) % 2 == 0))
    return cases


def check_sparse(K: int, N: int, m: int, n: int, dtype: str, lead: tuple[int, ...], threads: int, bias: bool, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    weight = formats.magnitude_nm(rng.standard_normal((K, N)).astype(np.float32), m, n)
    w = formats.pack_sparse(weight, m, n, dtype)
    b = rng.standard_normal(N).astype(np.float32) if bias else None
    a = rng.standard_normal((*lead, K)).astype(np.float32)
    y = graphs.session(graphs.sparse_matmul(w, b), threads).run(None, {"A": a})[0]
    ref = reference.sparse_matmul(a, w, b)
    if y.shape != ref.shape:
        return float("inf")
    return _relative_error(y, ref)


def lut_cases() -> list[tuple[int, int, int, str, int, tuple[int, ...], int, bool]]:
    """(K, N, bits, codebook scope, group size, A's leading shape, threads, codes as a blob)."""
    shapes = [(16, 1, 4), (33, 5, 2), (100, 9, 3), (130, 17, 4), (257, 24, 2), (300, 40, 4)]
    cases = []
    for (K, N, bits), scope, lead, threads in itertools.product(shapes, ("tensor", "column", "group"), ((1,), (5,), (2, 3)), (1, 2)):
        cases.append((K, N, bits, scope, 32 if scope == "group" else 0, lead, threads, (K + threads) % 3 == 0))
    return cases


def check_lut(K: int, N: int, bits: int, scope: str, group: int, lead: tuple[int, ...], threads: int, blob: bool, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    entries = 1 << bits
    codes = rng.integers(0, entries, (K, N)).astype(np.uint8)
    book = {"tensor": (1, entries), "column": (N, entries), "group": (-(-K // 32), N, entries)}[scope]
    codebook = rng.standard_normal(book).astype(np.float32)
    packed = formats.pack_codes(codes, bits)
    source = formats.encode(codes.T.copy(), entries) if blob else packed
    a = rng.standard_normal((*lead, K)).astype(np.float32)
    model = graphs.lut_matmul(source, codebook, K, N, bits, group)
    y = graphs.session(model, threads).run(None, {"A": a})[0]
    return _relative_error(y, reference.lut_matmul(a, packed, codebook, K, bits, group))


def check_lut_int8(K: int, N: int, bits: int, scope: str, rows: int, threads: int, seed: int = 0) -> float:
    """Accuracy level 4 against its simulation where the int8 path runs, else against the exact reference."""
    from onnxpress import kernels

    rng = np.random.default_rng(seed)
    entries = 1 << bits
    codes = rng.integers(0, entries, (K, N)).astype(np.uint8)
    book = {"tensor": (1, entries), "column": (N, entries), "group": (-(-K // 128), N, entries)}[scope]
    codebook = rng.standard_normal(book).astype(np.float32)
    group = 128 if scope == "group" else 0
    packed = formats.pack_codes(codes, bits)
    a = rng.standard_normal((rows, K)).astype(np.float32)
    y = graphs.session(graphs.lut_matmul(packed, codebook, K, N, bits, group, accuracy_level=4), threads).run(None, {"A": a})[0]
    simulate = kernels.int8_lut() and bits != 2
    ref = (reference.lut_matmul_int8 if simulate else reference.lut_matmul)(a, packed, codebook, K, bits, group)
    return _relative_error(y, ref)


def run() -> list[str]:
    failures = []
    for case in sparse_cases():
        error = check_sparse(*case)
        if not error <= TOLERANCE:
            failures.append(f"SparseMatMul {case}: relative error {error:.2e}")
    for case in lut_cases():
        error = check_lut(*case)
        if not error <= TOLERANCE:
            failures.append(f"LutMatMul {case}: relative error {error:.2e}")
    for case in itertools.product(((128, 8, 4), (300, 13, 3), (513, 40, 4), (96, 5, 2)), ("tensor", "column", "group"), (1, 6), (1, 2)):
        (K, N, bits), scope, rows, threads = case
        error = check_lut_int8(K, N, bits, scope, rows, threads)
        if not error <= TOLERANCE:
            failures.append(f"LutMatMul accuracy_level=4 {case}: relative error {error:.2e}")
    rng = np.random.default_rng(3)
    symbols = rng.integers(0, 11, 5000).astype(np.uint8)
    book = rng.standard_normal(11).astype(np.float32)
    blob = formats.encode(symbols, 11)
    out = graphs.session(graphs.decode_weights(blob, book, (50, 100))).run(None, {"A": np.zeros((50, 100), np.float32)})[0]
    if not np.array_equal(out.reshape(-1), book[symbols]):
        failures.append("DecodeWeights: decoded values differ from codebook[symbols]")
    return failures
