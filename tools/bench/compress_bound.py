"""How far a clustered model is from what any memoryless code could do at the same per-layer error.

For each clustered weight: the entropy of its codes (what an ideal coder spends), and the Shannon lower bound
h(W) - 0.5 log2(2 pi e MSE) bits per weight at the error the grid left (h from a 4,096-bin histogram). If even
the bound sums to more bits than a size target allows, no scalar post-training code reaches that target at
this fidelity.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def entropy_bound(source: str, calibration: list, spec: str) -> dict[str, float]:
    """Run ``spec`` (which must contain one ``cluster``) and weigh its codes against the bound."""
    import onnxpress
    from onnxpress.irpasses.clustering.cluster import Cluster
    from onnxpress.irpasses.core import build_passes, default_registry

    passes = build_passes(spec, default_registry())
    onnxpress.optimize(onnxpress.load(source), passes, samples=calibration, verify="off")
    cluster = next(_find(passes, Cluster))
    originals = _originals(cluster)
    weights = entropy = bound = 0.0
    for (tensor_id, _), clustered in cluster._clusters.items():
        w = originals[tensor_id].astype(np.float64)
        if w.shape != clustered.codes.shape:  # a Conv kernel [O, ...], clustered as [I/g * window, O]
            w = w.reshape(w.shape[0], -1).T
        mse = float(np.mean((w - clustered.dense()) ** 2))
        weights += w.size
        entropy += _code_entropy(clustered.codes) * w.size
        bound += max(_differential_entropy(w) - 0.5 * np.log2(2 * np.pi * np.e * max(mse, 1e-30)), 0.0) * w.size
    return {"weights": weights, "code_bits": float(entropy / weights), "bound_bits": float(bound / weights)}


def _find(passes: list[Any], kind: type) -> Any:
    for p in passes:
        if isinstance(p, kind):
            yield p
        for inner in getattr(p, "passes", []) or []:
            yield from _find([inner], kind)


def _originals(cluster: Any) -> dict[int, np.ndarray]:
    """The float weights the pass clustered, by tensor id (the pass keeps them alive in ``_pinned``)."""
    return {id(t): t.numpy().astype(np.float32) for t in cluster._pinned}


def _code_entropy(codes: np.ndarray) -> float:
    p = np.bincount(codes.reshape(-1)) / codes.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _differential_entropy(w: np.ndarray, bins: int = 4096) -> float:
    counts, edges = np.histogram(w, bins=bins)
    p = counts[counts > 0] / w.size
    return float(-(p * np.log2(p)).sum() + np.log2(edges[1] - edges[0]))
