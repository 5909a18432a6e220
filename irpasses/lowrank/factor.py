"""The math of ``lowrank``: a weight [K, N] as ranked rank-1 directions, and a global rank allocation.

Whitened (SVD-LLM): with H = E[x xᵀ] = L Lᵀ, the output error of a rank-r replacement is
||X (W - A B)||² = ||Lᵀ W - Lᵀ A B||²; the SVD Lᵀ W = U Σ Vᵀ minimizes it with Lᵀ A = U_r, so A = L⁻ᵀ U_r
and B = Σ_r V_rᵀ, and the error is the sum of the discarded σ². Plain SVD truncates W itself; with H its
output error is still exact and cheap: sum over discarded i of σ_i² u_iᵀ H u_i.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np


@dataclasses.dataclass
class Factored:
    """A layer's weight as ranked directions: W ≈ left[:, :r] @ right[:r]; ``energy[i]`` is the output error
    energy that discarding direction i adds, ``total`` the energy of the whole output (for relative errors)."""

    left: np.ndarray  # [K, m]
    right: np.ndarray  # [m, N]
    energy: np.ndarray  # [m]
    total: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.left.shape[0], self.right.shape[1]

    def relative_error(self, rank: int | None) -> float:
        """Output error energy at ``rank`` (None: not factorized) over the layer's output energy."""
        return 0.0 if rank is None else float(self.energy[rank:].sum() / max(self.total, 1e-30))

    def factors(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.ascontiguousarray(self.left[:, :rank], dtype=np.float32),
                np.ascontiguousarray(self.right[:rank], dtype=np.float32))


def _balanced(u: np.ndarray, s: np.ndarray, vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ split evenly between the two factors: neither carries the whole dynamic range (int8 after lowrank)."""
    root = np.sqrt(s)
    return u * root, root[:, None] * vt


def plain_svd(weight: np.ndarray, gram: np.ndarray | None = None) -> Factored:
    """Truncated SVD of W; with E[x xᵀ], the energies measure output error, without, weight error."""
    w = weight.astype(np.float64)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    left, right = _balanced(u, s, vt)
    if gram is None:
        return Factored(left, right, s**2, float((s**2).sum()))
    h = gram.astype(np.float64)
    energy = s**2 * ((h @ u) * u).sum(axis=0)
    return Factored(left, right, energy, float(((h @ w) * w).sum()))


def cholesky(gram: np.ndarray, damp: float) -> np.ndarray:
    """Lower Cholesky factor of H + damp·mean(diag H)·I, raising the damping until it factors (H from a few
    hundred tokens is singular for 1536 inputs)."""
    h = gram.astype(np.float64)
    scale = float(np.mean(np.diag(h))) or 1.0
    for attempt in range(8):
        try:
            return np.linalg.cholesky(h + np.eye(len(h)) * max(damp, 1e-6) * scale * 10**attempt)
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the calibration second-moment matrix stayed singular after dampening")


def whitened_svd(weight: np.ndarray, gram: np.ndarray, damp: float = 0.01) -> Factored:
    """SVD of Lᵀ W (the weight as the calibration data sees it), mapped back by L⁻ᵀ."""
    from scipy.linalg import solve_triangular

    lower = cholesky(gram, damp)
    u, s, vt = np.linalg.svd(lower.T @ weight.astype(np.float64), full_matrices=False)
    left, right = _balanced(u, s, vt)
    return Factored(solve_triangular(lower.T, left, lower=False), right, s**2, float((s**2).sum()))


def largest_paying_rank(k: int, n: int, multiple: int) -> int:
    """The largest multiple of ``multiple`` whose two factors hold fewer parameters than K x N (0: none)."""
    bound = min(k, n, (k * n - 1) // (k + n))
    return bound // multiple * multiple


def _hull(layer: Factored, multiple: int) -> list[tuple[int, int, float]]:
    """(rank, parameters saved, relative error) at the vertices of the lower convex hull of the layer's
    error-vs-saving curve, from whole (rank 0 stands for it) down: the first cut of a layer saves little (the
    factors of rank K N / (K + N) are as big as W), so steps of one ``multiple`` would never start one."""
    k, n = layer.shape
    top = largest_paying_rank(k, n, multiple)
    points = [(0, 0, 0.0)] + [(r, k * n - r * (k + n), layer.relative_error(r)) for r in range(top, multiple - 1, -multiple)]
    hull: list[tuple[int, int, float]] = []
    for point in points:
        while len(hull) >= 2:
            (_, s0, e0), (_, s1, e1) = hull[-2], hull[-1]
            if (e1 - e0) * (point[1] - s0) >= (point[2] - e0) * (s1 - s0):  # hull[-1] lies above the chord
                hull.pop()
            else:
                break
        hull.append(point)
    return hull


def allocate(layers: list[Factored], keep: float, multiple: int) -> list[int | None]:
    """Ranks (None: left whole) holding at most ``keep`` of the layers' parameters at a small total relative
    error: greedily, the next cut is the hull step (``_hull``) of any layer that adds the least error per
    parameter saved: the Lagrangian optimum of the knapsack at the hull's vertices."""
    hulls = [_hull(layer, multiple) for layer in layers]
    steps = [0] * len(layers)
    params = sum(k * n for k, n in (f.shape for f in layers))
    target = keep * params
    heap: list[tuple[float, int]] = []

    def push(index: int) -> None:
        hull, step = hulls[index], steps[index]
        if step + 1 < len(hull):
            (_, s0, e0), (_, s1, e1) = hull[step], hull[step + 1]
            heapq.heappush(heap, ((e1 - e0) / (s1 - s0), index))

    for index in range(len(layers)):
        push(index)
    while params > target and heap:
        _, index = heapq.heappop(heap)
        steps[index] += 1
        hull, step = hulls[index], steps[index]
        params -= hull[step][1] - hull[step - 1][1]
        push(index)
    return [hull[step][0] or None for hull, step in zip(hulls, steps, strict=True)]
