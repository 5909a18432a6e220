"""Calibrators: from a tensor's statistics to the range its quantizer covers.

All but MinMax pick a symmetric clipping threshold t on |x| (the range is then [-t, t]):
- minmax: the observed [min, max];
- percentile: the smallest t below which ``percentile`` % of |x| falls;
- entropy: TensorRT's KL-divergence search over candidate thresholds (int8: 128 levels of |x|, 256 for a
  never-negative tensor held in uint8);
- mse: the t that minimizes the expected squared error of clipping plus rounding, estimated from the histogram.
"""

from __future__ import annotations

import numpy as np
from onnxpress.irpasses.quant.histogram import TensorHistogram


def minmax(h: TensorHistogram) -> tuple[float, float]:
    return float(min(h.minimum, 0.0)), float(max(h.maximum, 0.0))


def percentile(h: TensorHistogram, percent: float = 99.99) -> tuple[float, float]:
    cumulative = np.cumsum(h.counts)
    if cumulative[-1] == 0:
        return 0.0, 0.0
    index = int(np.searchsorted(cumulative, cumulative[-1] * percent / 100.0))
    t = float(h.edges[min(index + 1, h.bins)])
    return -t, t


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    if not np.any(q[mask] > 0):
        return np.inf
    q = np.where(q > 0, q, 1e-12)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def entropy(h: TensorHistogram, levels: int = 128, stride: int = 16) -> tuple[float, float]:
    """TensorRT's entropy calibration: the threshold whose quantized distribution diverges least from the data.

    The reference P is the histogram up to a candidate threshold with the clipped mass folded into its last
    bin; the candidate Q is the same bins *without* that mass, merged into ``levels`` and spread back. Building
    Q from P would give KL 0 at the smallest threshold (one bin per level) and clip everything. Exact zeros
    (half of a Relu output) are representable at any threshold, so the zero bin is flattened to its
    neighbour's count, as NVIDIA's pytorch-quantization does, instead of dominating the divergence.
    """
    counts = h.counts.astype(np.float64)
    if counts.sum() == 0:
        return 0.0, 0.0
    if counts.size > 1:
        counts[0] = counts[1]
    best_t, best_kl = h.top, np.inf
    for i in range(levels, h.bins + 1, stride):
        reference = counts[:i].copy()
        reference[i - 1] += counts[i:].sum()  # clipped mass lands in the last bin
        expanded = []
        for chunk in np.array_split(counts[:i], levels):
            nonzero = np.count_nonzero(chunk)
            value = chunk.sum() / nonzero if nonzero else 0.0
            expanded.append(np.where(chunk > 0, value, 0.0))
        candidate = np.concatenate(expanded)
        p = reference / reference.sum()
        q = candidate / candidate.sum() if candidate.sum() else candidate
        divergence = _kl(p, q)
        if divergence < best_kl:
            best_kl, best_t = divergence, float(h.edges[i])
    return -best_t, best_t


def mse(h: TensorHistogram, levels: int = 127, candidates: int = 256) -> tuple[float, float]:
    """Threshold minimizing clipping error (mass above t) plus rounding error (step^2 / 12 below t)."""
    centers, counts = h.centers(), h.counts
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    best_t, best_err = h.top, np.inf
    for t in np.linspace(h.top / candidates, h.top, candidates):
        step = t / levels
        clipped = centers > t
        err = np.sum(counts[clipped] * (centers[clipped] - t) ** 2) + counts[~clipped].sum() * step * step / 12.0
        if err < best_err:
            best_err, best_t = err, float(t)
    return -best_t, best_t


CALIBRATORS = {"minmax": minmax, "percentile": percentile, "entropy": entropy, "mse": mse}
