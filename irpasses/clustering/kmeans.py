"""1-D k-means for weight clustering, every column of a matrix at once.

Lloyd's iterations from (weighted) quantile starting points: in one dimension the nearest centroid is found by
comparing with the midpoints between sorted centroids, so an iteration is a few vector operations over the
matrix, not a distance table. Exact zeros keep a code of their own whose centroid stays 0, so a pruned
weight stays exactly as sparse (N:M patterns survive clustering).
"""

from __future__ import annotations

import numpy as np

FIT_ROWS = 8192
"""Taller matrices fit their centroids on this many rows (a fixed random subset), then assign every row:
16 centroids in one dimension are settled long before that (MiniLM's 30522x384 table: 4 s)."""


def _codes(weight: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for every element; ``centroids`` [N, L] sorted along L. Tall matrices
    search column by column; wide ones (a codebook per table row: 30522 columns of 384) compare blocks of
    columns against all midpoints at once."""
    K, N = weight.shape
    mids = (centroids[:, :-1] + centroids[:, 1:]) / 2  # [N, L-1]
    codes = np.empty((K, N), np.uint8)
    if N <= K:
        for n in range(N):
            codes[:, n] = np.searchsorted(mids[n], weight[:, n], side="left")
        return codes
    step = max(1, (1 << 24) // max(K * mids.shape[1], 1))
    for start in range(0, N, step):
        block = weight[:, start : start + step]
        codes[:, start : start + step] = (block[:, :, None] > mids[None, start : start + step]).sum(axis=2)
    return codes


def _quantile_start(weight: np.ndarray, levels: int, importance: np.ndarray | None) -> np.ndarray:
    """Centroids at the (importance-weighted) quantiles of every column: [N, levels], sorted."""
    K, N = weight.shape
    order = np.argsort(weight, axis=0, kind="stable")
    ordered = np.take_along_axis(weight, order, axis=0)
    mass = np.ones((K, 1), np.float64) if importance is None else importance.reshape(K, 1).astype(np.float64)
    cumulative = np.cumsum(np.broadcast_to(mass, (K, N))[order, np.arange(N)], axis=0)
    cumulative /= cumulative[-1:]
    targets = (np.arange(levels) + 0.5) / levels
    rows = np.stack([np.searchsorted(cumulative[:, n], targets).clip(0, K - 1) for n in range(N)], axis=1)
    return np.sort(np.take_along_axis(ordered, rows, axis=0).T, axis=1)


def _exact_where_few(w: np.ndarray, counted: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Columns with no more distinct (counted) values than centroids take exactly those values (Lloyd can park
    two centroids on one value and merge two others); the unused slots repeat the largest."""
    levels = centroids.shape[1]
    ordered = np.sort(np.where(counted, w, np.nan), axis=0)
    distinct = (np.diff(ordered, axis=0) > 0).sum(axis=0) + 1
    out = centroids.copy()
    for n in np.flatnonzero(distinct <= levels):
        values = np.unique(w[counted[:, n], n])
        if values.size:
            out[n] = np.concatenate([values, np.full(levels - values.size, values[-1])]).astype(np.float32)
    return out


def kmeans_columns(weight: np.ndarray, levels: int, importance: np.ndarray | None = None, iterations: int = 25,
                   keep_zeros: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(codes [K, N] uint8, codebook [N, levels] float32) minimising sum_k importance_k (w_kn - c_n[code_kn])^2
    per column. With ``keep_zeros`` and zeros present, code 0 is exactly 0 and the rest cluster the non-zeros."""
    w = np.asarray(weight, dtype=np.float32)
    K, N = w.shape
    if K > FIT_ROWS and N > 1:  # a single column (a histogram) is cheap at any length
        # the heaviest rows first (those the importance says matter most), the rest at random, and each
        # column's extremes, so no outlier ends up far from every centroid
        rng = np.random.default_rng(0)
        extremes = np.unique(np.concatenate([w.argmin(axis=0), w.argmax(axis=0)]))
        if importance is not None:
            weights = np.asarray(importance).reshape(K)
            heavy = np.union1d(np.argsort(-weights, kind="stable")[: FIT_ROWS // 2], extremes)
        else:
            heavy = extremes
        others = np.setdiff1d(np.arange(K), heavy)
        rows = np.sort(np.concatenate([heavy, rng.choice(others, max(0, FIT_ROWS - heavy.size), replace=False)]))
        _, book = kmeans_columns(w[rows], levels, None if importance is None else np.asarray(importance)[rows], iterations, keep_zeros)
        if keep_zeros and (w == 0).any() and not (book[:, 0] == 0).all():
            book = np.concatenate([np.zeros((N, 1), np.float32), book[:, 1:]], axis=1)
        codes = _codes(w, np.sort(book, axis=1))
        return codes, np.sort(book, axis=1)
    zeros = keep_zeros and bool((w == 0).any())
    free = levels - 1 if zeros else levels
    h = None if importance is None else np.maximum(np.asarray(importance, np.float64).reshape(K), 1e-12)
    # Zeros out of the way: give them a value inside each column's range so they do not drag the quantiles,
    # then mask them out of the updates.
    nonzero = w != 0 if zeros else np.ones_like(w, dtype=bool)
    centroids = _quantile_start(np.where(nonzero, w, np.median(w, axis=0, keepdims=True)), free, h)
    mass = np.broadcast_to((np.ones(K) if h is None else h).reshape(K, 1), (K, N)) * nonzero
    flat_base = (np.arange(N) * free).reshape(1, N)
    for _ in range(iterations):
        codes = _codes(w, centroids)
        index = (codes.astype(np.int64) + flat_base).ravel()
        totals = np.bincount(index, weights=(mass * w).ravel(), minlength=N * free).reshape(N, free)
        counts = np.bincount(index, weights=mass.ravel(), minlength=N * free).reshape(N, free)
        updated = np.where(counts > 0, totals / np.maximum(counts, 1e-30), centroids)
        updated = np.sort(updated, axis=1).astype(np.float32)
        if np.array_equal(updated, centroids):
            break
        centroids = updated
    centroids = _exact_where_few(w, nonzero, centroids)
    codes = _codes(w, centroids)
    if not zeros:
        return codes, centroids.astype(np.float32)
    book = np.concatenate([np.zeros((N, 1), np.float32), centroids], axis=1)
    return np.where(nonzero, codes + 1, 0).astype(np.uint8), book


HISTOGRAM_BINS = 1 << 16


def kmeans_tensor(weight: np.ndarray, levels: int, importance: np.ndarray | None = None, iterations: int = 25,
                  keep_zeros: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One codebook for the whole matrix: (codes [K, N], codebook [1, levels]); ``importance`` is per row.
    The centroids are fitted on a 65536-bin histogram of every value (bin centres weighted by their counts):
    all values count, the extremes included (a random subset missed the outlier weights, which then clamped:
    MiniLM at 8 bits, retrieval 0.897 against 0.988 for uniform int8)."""
    K, N = weight.shape
    flat = np.asarray(weight, np.float32).reshape(-1)
    mass = None if importance is None else np.repeat(np.asarray(importance, np.float64).reshape(K), N)
    zeros = keep_zeros and bool((flat == 0).any())
    chosen = flat != 0 if zeros else np.ones(flat.shape, bool)
    free = levels - 1 if zeros else levels
    values = flat[chosen]
    if values.size == 0:
        return np.zeros((K, N), np.uint8), np.zeros((1, levels), np.float32)
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        book = np.full(free, lo, np.float32)
    else:
        # in float64: a narrow range far from zero has too few float32 steps for 65536 bins
        counts, edges = np.histogram(values.astype(np.float64), HISTOGRAM_BINS, range=(lo, hi),
                                     weights=None if mass is None else mass[chosen])
        centres = ((edges[:-1] + edges[1:]) / 2)[counts > 0].astype(np.float32)
        # the end bins' centres stand for the extremes themselves, so the outermost centroids can reach them
        centres[0], centres[-1] = lo, hi
        # a few thousand points: iterate to convergence (heavy tails pull the outer centroids out slowly)
        _, fitted = kmeans_columns(centres.reshape(-1, 1), free, counts[counts > 0], max(iterations, 500), keep_zeros=False)
        book = np.sort(fitted[0])
    distinct = np.unique(values)
    if distinct.size <= free:  # few values: exactly those
        book = np.concatenate([distinct, np.full(free - distinct.size, distinct[-1])]).astype(np.float32)
    mids = (book[:-1] + book[1:]) / 2
    codes = np.searchsorted(mids, flat, side="left").astype(np.uint8)
    if zeros:
        codes = np.where(chosen, codes + 1, 0).astype(np.uint8)
        book = np.concatenate([[0.0], book]).astype(np.float32)
    return codes.reshape(K, N), book.reshape(1, -1).astype(np.float32)


def uniform_grid(weight: np.ndarray, levels: int, step: float = 0.0, tails: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced levels for the whole tensor plus a few k-means levels for its tails: (codes [K, N] uint8,
    sorted book [1, levels]). Meant for entropy coding: k-means spreads codes evenly over its levels (MiniLM at
    4 bits: 3.90 bits of entropy per code, 2 % to gain), while a uniform step leaves rare codes in the tails
    for the coder to shorten; at the error levels that keep fidelity, an entropy-coded uniform quantizer comes
    within ~0.25 bit of the rate-distortion bound, and one step for the whole tensor is what equal error per
    weight asks for. The step is ``step`` x the tensor's RMS, but at least what lets the uniform levels reach
    99.9 % of the weights (finer would crowd the rest into the tail levels, and fidelity would fall as the
    step shrinks); the weights beyond the uniform levels' reach (trained weights have a few far out: MiniLM's
    FFN outputs peak at 175x their RMS, which would stretch a plain 8-bit grid 14x) share ``tails`` levels
    (default levels/8) fitted by k-means. ``step`` 0: plain levels over the tensor's range, no tails. Zero is a
    level, so pruned weights stay exactly zero."""
    w = np.asarray(weight, dtype=np.float32)
    peak = float(np.abs(w).max()) if w.size else 0.0
    rms = float(np.sqrt(np.mean(np.square(w, dtype=np.float64)))) if w.size else 0.0
    tails = levels // 8 if tails is None else tails
    reach_levels = (levels - 1 - (tails if step > 0 else 0)) // 2  # uniform levels -c..c around zero
    if step > 0:  # never so fine that the uniform levels miss more than the outer 0.1 % (the tails would crowd)
        magnitudes = np.abs(w).reshape(-1)
        kth = min(int(0.999 * magnitudes.size), magnitudes.size - 1)
        delta = max(step * rms, float(np.partition(magnitudes, kth)[kth]) / max(reach_levels, 1))
    else:
        delta = peak / max(reach_levels, 1)
    delta = delta or 1.0
    book = np.arange(-reach_levels, reach_levels + 1, dtype=np.float64) * delta
    outside = np.abs(w) > (reach_levels + 0.5) * delta
    if outside.any():
        spare = levels - book.size
        far = np.unique(w[outside])
        tail = far if far.size <= spare else kmeans_tensor(far.reshape(-1, 1), spare, keep_zeros=False)[1][0]
        book = np.concatenate([book, tail])
    book = np.sort(np.concatenate([book, np.full(levels - book.size, book[-1] if book.size else 0.0)])).astype(np.float32)
    codes = np.searchsorted((book[:-1] + book[1:]) / 2, w, side="left").astype(np.uint8)
    return codes, book.reshape(1, levels)
