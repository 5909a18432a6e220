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

    def approximation(self, rank: int) -> np.ndarray:
        return self.left[:, :rank] @ self.right[:rank]

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


@dataclasses.dataclass(frozen=True)
class Choice:
    """One way to factorize a layer: ``kind`` (matrix: two products through rank r; spatial: k x 1 then 1 x k;
    tucker: 1x1 -> k x k core -> 1x1) with its ranks, what it costs and its relative output error."""

    kind: str
    ranks: tuple[int, ...]
    params: int
    macs: float
    error: float

    def cost(self, measure: str) -> float:
        return float(self.params if measure == "params" else self.macs)


@dataclasses.dataclass
class Curve:
    """A layer's error-vs-cost trade-off: whole (``params``, ``macs``, no error) or any of ``choices``."""

    params: int
    macs: float
    choices: list[Choice]
    weight: float = 1.0
    """How much of a unit of this layer's relative error reaches the model's outputs (measured; 1: unknown)."""

    def cost(self, measure: str) -> float:
        return float(self.params if measure == "params" else self.macs)


def hull(curve: Curve, measure: str) -> list[tuple[float, float, int | None]]:
    """(cost saved, weighted relative error, choice index; None: whole) at the vertices of the lower convex hull of the
    layer's error-vs-saving points, from whole on: the greedy steps between vertices. The first cut of a layer
    saves little (the factors at rank K N / (K + N) are as big as W), so single steps would never start one."""
    whole = curve.cost(measure)
    points = sorted(((whole - c.cost(measure), c.error * curve.weight, i) for i, c in enumerate(curve.choices) if c.cost(measure) < whole),
                    key=lambda p: (p[0], p[1]))
    out: list[tuple[float, float, int | None]] = [(0.0, 0.0, None)]
    for point in points:
        if point[1] <= out[-1][1] and point[0] >= out[-1][0]:  # saves as much for no more error: dominates
            while len(out) > 1 and point[1] <= out[-1][1]:
                out.pop()
        while len(out) >= 2:
            (s0, e0, _), (s1, e1, _) = out[-2], out[-1]
            if (e1 - e0) * (point[0] - s0) >= (point[1] - e0) * (s1 - s0):  # out[-1] lies above the chord
                out.pop()
            else:
                break
        if point[0] > out[-1][0]:
            out.append(point)
    return out


def allocate_curves(curves: list[Curve], keep: float, measure: str = "params") -> list[int | None]:
    """Choice index per layer (None: left whole) holding at most ``keep`` of the layers' cost (parameters or
    multiply-adds) at a small total relative error: greedily, the next step is the hull step (``hull``) of the
    layer that adds the least error per unit saved: the Lagrangian optimum of the knapsack at the vertices."""
    hulls = [hull(curve, measure) for curve in curves]
    steps = [0] * len(curves)
    cost = sum(curve.cost(measure) for curve in curves)
    target = keep * cost
    heap: list[tuple[float, int]] = []

    def push(index: int) -> None:
        vertices, step = hulls[index], steps[index]
        if step + 1 < len(vertices):
            (s0, e0, _), (s1, e1, _) = vertices[step], vertices[step + 1]
            heapq.heappush(heap, ((e1 - e0) / (s1 - s0), index))

    for index in range(len(curves)):
        push(index)
    while cost > target and heap:
        _, index = heapq.heappop(heap)
        steps[index] += 1
        vertices, step = hulls[index], steps[index]
        cost -= vertices[step][0] - vertices[step - 1][0]
        push(index)
    return [vertices[step][2] for vertices, step in zip(hulls, steps, strict=True)]


def rank_grid(limit: int, multiple: int, most: int = 24) -> list[int]:
    """Multiples of ``multiple`` below ``limit`` (at most ``most`` of them, evenly spread): the ranks tried."""
    ranks = list(range(multiple, limit, multiple))
    if len(ranks) > most:
        picks = np.unique(np.linspace(0, len(ranks) - 1, most).round().astype(int))
        ranks = [ranks[i] for i in picks]
    return ranks


def matrix_curve(layer: Factored, multiple: int, rows: float) -> Curve:
    """Ranks that pay (multiples of ``multiple``) of a [K, N] weight applied to ``rows`` rows per sample."""
    k, n = layer.shape
    top = largest_paying_rank(k, n, multiple)
    choices = [Choice("matrix", (r,), r * (k + n), rows * r * (k + n), layer.relative_error(r)) for r in range(multiple, top + 1, multiple)]
    return Curve(k * n, rows * k * n, choices)


def allocate(layers: list[Factored], keep: float, multiple: int) -> list[int | None]:
    """Ranks (None: left whole) of [K, N] layers holding at most ``keep`` of their parameters."""
    curves = [matrix_curve(layer, multiple, 1.0) for layer in layers]
    picked = allocate_curves(curves, keep, "params")
    return [None if i is None else curve.choices[i].ranks[0] for curve, i in zip(curves, picked, strict=True)]
