"""Masks for pruning and SparseGPT's one-shot weight update, on weights read as [K, N] (K = reduction axis).

N:M groups are m consecutive rows of one column along K (``kernels.formats.nm_positions``' layout): what
sparse tensor cores and our ``SparseMatMul`` kernel read. A mask is boolean, True = kept.

SparseGPT (Frantar & Alistarh, 2023) prunes the rows of W one at a time in the natural order (N:M groups must
stay aligned) and moves each row's pruning error onto the rows not yet processed, weighted by the inverse of
H = E[x xᵀ]: the sweep is GPTQ's (``gptq_rows``), with "round to zero where the mask says so" as the rounding.
The mask of each group (or, unstructured, of each lazy block) is chosen when the sweep reaches it, from the
weights as updated so far, by the OBS saliency w² / [H⁻¹]_kk² (the diagonal of the Cholesky factor).
"""

from __future__ import annotations

import numpy as np
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.quant.gptq import Prepared, gptq_rows

GROUP_SIZES = (4, 8)
"""m of the N:M patterns the kernels and TensorRT support."""


def parse_pattern(text: str) -> tuple[int, int] | None:
    """'n:m' -> (n, m); 'unstructured' -> None. Anything else is a PassOptionError naming the option."""
    if text == "unstructured":
        return None
    parts = text.split(":")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        n, m = int(parts[0]), int(parts[1])
        if m in GROUP_SIZES and 1 <= n < m:
            return n, m
    raise PassOptionError(f"prune: pattern={text!r} is not supported",
                          hint="n:m with m 4 or 8 and 1 <= n < m (2:4, 4:8, 1:4...), or 'unstructured' with sparsity=...")


def nm_mask(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the n highest scores of each group of m rows of each column of ``scores`` [K, N] (K % m == 0);
    ties go to the earlier row."""
    k, columns = scores.shape
    groups = scores.reshape(k // m, m, columns)
    order = np.argsort(-groups, axis=1, kind="stable")
    mask = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(mask, order[:, :n, :], True, axis=1)
    return mask.reshape(k, columns)


def top_mask(scores: np.ndarray, sparsity: float, axis: int | None) -> np.ndarray:
    """Prune the floor(sparsity * count) lowest scores along ``axis`` (None: over the whole array)."""
    if axis is None:
        flat = top_mask(scores.reshape(-1, 1), sparsity, 0)
        return flat.reshape(scores.shape)
    count = scores.shape[axis]
    pruned = int(sparsity * count)
    order = np.argsort(scores, axis=axis, kind="stable")
    mask = np.ones(scores.shape, dtype=bool)
    np.put_along_axis(mask, np.take(order, np.arange(pruned), axis=axis), False, axis=axis)
    return mask


def choose_mask(scores: np.ndarray, pattern: tuple[int, int] | None, sparsity: float, axis: int | None) -> np.ndarray:
    """The N:M mask for a pattern, else the unstructured one at ``sparsity`` along ``axis``."""
    return nm_mask(scores, *pattern) if pattern is not None else top_mask(scores, sparsity, axis)


def sparsegpt(weight: np.ndarray, prepared: Prepared, pattern: tuple[int, int] | None, sparsity: float,
              lazy: int) -> tuple[np.ndarray, np.ndarray]:
    """Prune a [K, N] weight with SparseGPT. ``prepared`` must be in natural order (``act_order=False``).
    N:M: each group's mask is chosen when the sweep reaches its first row; unstructured: each lazy block of
    ``lazy`` rows prunes ``sparsity`` of its entries (the adaptive mask of the paper: the share may differ
    between columns and blocks). For N:M, ``lazy`` must be a multiple of m. Returns (pruned [K, N] float64,
    mask [K, N])."""
    k, n = weight.shape
    w = weight.T.astype(np.float64)  # [N, K]: GPTQ's orientation, one column per weight row
    w[:, prepared.dead] = 0.0  # inputs that are always zero: free to prune
    saliency_scale = np.diag(prepared.hinv) ** 2
    width = pattern[1] if pattern is not None else lazy
    if pattern is not None and lazy % width:
        raise ValueError(f"the lazy block {lazy} is not a multiple of m={width}")
    mask = np.ones((n, k), dtype=bool)
    out = np.zeros((n, k))

    def prune_row(w1: np.ndarray, i: int, col: int) -> np.ndarray:
        if i % width == 0:  # the sweep reached a new group (or lazy block): choose its mask now
            stop = min(i + width, w1.shape[1])
            scores = w1[:, i:stop] ** 2 / saliency_scale[col : col + stop - i]
            mask[:, col : col + stop - i] = choose_mask(scores.T, pattern, sparsity, None).T
        out[:, col] = np.where(mask[:, col], w1[:, i], 0.0)
        return out[:, col]

    gptq_rows(w, prepared, prune_row, min(lazy, k))
    return out.T, mask.T
