"""Sequential (error-feedback) refit of ``lowrank``'s chosen factorizations (option ``sequential``).

The plain pass fits every layer to the float model's own inputs X, so the errors of earlier factorized layers
compound. Here the layers are rewritten in topological stages: a layer's factors are refit on the inputs X_c it
sees in the model with every earlier stage already factorized, to reproduce the float layer's output X W:

    G = X_cᵀ X_c, C = X_cᵀ X (per row), M = argmin ||X_c M - X W||² + λ ||M - W||² = W + (G + λ I)⁻¹ (C - G) W,

then, as SVD-LLM does with W, the SVD of Lᵀ M (G + damp·I = L Lᵀ) truncated to the allocated rank: the rank-r Â
nearest M as the factorized model's inputs see it. The ridge pulls toward W, not 0: where nothing upstream
changed (C = G) M is W exactly, and directions the data hardly spans keep the float weight. λ grows with K/rows
(``RIDGE``): with few calibration rows per input feature the regression fits their noise (MiniLM, below). With a
bias slot the moments are centered and the bias takes the float mean output: b + E[x] W - E[x_c] Â. k x k convs
use the same algebra over input patches (the refit kernel is then factorized by ``ConvFactors`` with the
factorized model's patch moment).

G and C are streamed in bounded memory: one model runs the float graph and a renamed copy of the partly
factorized one side by side on each sample (``twin_model``, through ``stream_statistics``' pieces), and a
``PairedMoments`` pairs the two models' rows at the same positions. Forms and ranks stay those the global
allocation chose on the float statistics. One calibration pass per stage after the first (a stage: layers no
other of the stage feeds; MiniLM: q/k/v, the attention output, FFN in, FFN out of each block: 24 stages, ~40 s).

Measured (held-out, the lowrank bench's data and metrics, 2026-12-02): PP-OCRv4 rec characters 0.960 -> 0.973
(macs:0.7), 0.948 -> 0.974 (macs:0.6); MiniLM retrieval 0.741 -> 0.734, 0.784 -> 0.800, 0.875 -> 0.853 at
params:0.7 / 0.8 / 0.9 (cosine +0.005 / +0.001 / -0.000): with 128 calibration sentences (2852 tokens) the refit
mostly fits the calibration set (its retrieval there rises 0.78 -> 0.85-0.94 at params:0.7, whatever the ridge);
with 300 sentences it does help (params:0.7: 0.725 -> 0.769). Hence off by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.lowrank.conv import ConvFactors, Fanout, PatchGram
from onnxpress.irpasses.lowrank.factor import Choice, Factored, whitened_svd
from onnxpress.irpasses.lowrank.layers import Candidates

PREFIX = "lowrank_sequential/"
"""Names of the partly factorized model's values in the twin model."""
RIDGE = 2.0
"""The refit's ridge toward the float weight, relative to mean(diag G), per input feature per calibration row
(RIDGE·K/rows): the regression's noise grows as K/rows (MiniLM: 2852 tokens for 1536 FFN inputs overfit at a
fixed 0.01; PP-OCRv4 rec's ~100k conv patches do not)."""
MAX_ROWS = 4096
"""Rows (token positions, pixels or patches) taken from each sample, as the float statistics do."""


class PairedMoments:
    """Streaming moments of paired rows: the float model's input x and the factorized model's x_c at the same
    positions: E[x_c x_cᵀ], E[x_c xᵀ], E[x_c], E[x]. Each side's array of a sample waits for the other's."""

    def __init__(self, rows: Callable[[np.ndarray, np.random.Generator], Callable[[np.ndarray], np.ndarray]],
                 seed: int = 0) -> None:
        self.rows = rows
        """array -> a function gathering the same random rows from an array of that shape (both sides)."""
        self.rng = np.random.default_rng(seed)
        self.waiting: list[np.ndarray | None] = [None, None]
        self.gram: np.ndarray | None = None
        self.cross: np.ndarray | None = None
        self.sums = [np.zeros(0), np.zeros(0)]
        self.count = 0
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_rows = 0

    def side(self, index: int) -> _Side:
        return _Side(self, index)

    def arrive(self, index: int, values: np.ndarray) -> None:
        self.waiting[index] = np.asarray(values)
        first, second = self.waiting
        if first is None or second is None:
            return
        self.waiting = [None, None]
        if first.shape != second.shape:
            return
        gather = self.rows(first, self.rng)
        x, xc = gather(first).astype(np.float32), gather(second).astype(np.float32)
        keep = np.isfinite(x).all(axis=1) & np.isfinite(xc).all(axis=1)
        self.pending.append((x[keep], xc[keep]))
        self.pending_rows += int(keep.sum())
        if self.pending_rows >= max(x.shape[1], 256):
            self._flush()

    def _flush(self) -> None:
        """Fold the buffered rows in with one product each (per-sample products of a few rows cost more)."""
        if not self.pending_rows:
            self.pending = []
            return
        x = np.concatenate([p[0] for p in self.pending])
        xc = np.concatenate([p[1] for p in self.pending])
        self.pending, self.pending_rows = [], 0
        if self.gram is None:
            self.gram, self.cross = np.zeros((x.shape[1],) * 2), np.zeros((x.shape[1],) * 2)
            self.sums = [np.zeros(x.shape[1]), np.zeros(x.shape[1])]
        self.gram += xc.T @ xc  # float32 products, accumulated in float64 (as GramMatrix)
        self.cross += xc.T @ x
        self.sums[0] += x.sum(axis=0, dtype=np.float64)
        self.sums[1] += xc.sum(axis=0, dtype=np.float64)
        self.count += len(x)

    @property
    def empty(self) -> bool:
        self._flush()
        return self.count == 0

    def moments(self, centered: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(G, C, E[x], E[x_c]) per row; centered: the covariances (the bias takes the means)."""
        self._flush()
        mean, mean_c = self.sums[0] / self.count, self.sums[1] / self.count
        gram, cross = self.gram / self.count, self.cross / self.count
        if centered:
            gram, cross = gram - np.outer(mean_c, mean_c), cross - np.outer(mean_c, mean)
        return gram, cross, mean, mean_c


@dataclasses.dataclass
class _Side:
    pair: PairedMoments
    index: int

    def update(self, values: np.ndarray) -> None:
        self.pair.arrive(self.index, values)


def matrix_rows(axis: int, max_rows: int = MAX_ROWS) -> Callable:
    """Rows along every axis but ``axis`` (the channels a matrix layer reduces), at most ``max_rows`` of them."""
    def rows(array: np.ndarray, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        count = array.size // array.shape[axis]
        picks = np.sort(rng.choice(count, max_rows, replace=False)) if count > max_rows else None

        def gather(values: np.ndarray) -> np.ndarray:
            flat = np.moveaxis(values, axis % values.ndim, -1).reshape(count, -1)
            return flat if picks is None else flat[picks]

        return gather

    return rows


def patch_rows(patch: PatchGram) -> Callable:
    """Input patches of a k x k conv at random output positions (``PatchGram``'s sampling)."""
    def rows(array: np.ndarray, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        padded = patch.padded(array)
        picks = patch.positions(padded.shape, rng) if padded is not None else None

        def gather(values: np.ndarray) -> np.ndarray:
            x = patch.padded(values)
            return np.zeros((0, 1), np.float32) if x is None or picks is None else patch.patches(x, picks)

        return gather

    return rows


def twin_model(reference: ir.Model, factorized: ir.Model) -> ir.Model:
    """One model running ``reference`` and a renamed copy (``PREFIX``) of ``factorized`` on the same inputs, so
    every sample's values of both arrive together (neither model is changed: both are snapshots)."""
    from onnxpress.irpasses.core.snapshot import snapshot

    twin, other = snapshot(reference), snapshot(factorized)
    inputs = {v.name: v for v in twin.graph.inputs}
    for value in other.graph.inputs:
        for use in list(value.uses()):
            use.node.replace_input_with(use.idx, inputs[value.name])
    for name in list(other.graph.initializers):
        _adopt(twin.graph, other.graph.initializers.pop(name))
    for node in ir.traversal.RecursiveGraphIterator(other.graph):
        if node.name:
            node.name = PREFIX + node.name
        for value in node.outputs:
            if value.name:
                value.name = PREFIX + value.name
    nodes = list(other.graph)
    outputs = list(other.graph.outputs)
    other.graph.outputs.clear()
    other.graph.remove(nodes, safe=False)
    twin.graph.extend(nodes)
    twin.graph.outputs.extend(o for o in outputs if not o.is_graph_input() and o.const_value is None)
    return twin


def _adopt(graph: ir.Graph, value: ir.Value) -> None:
    """Move an initializer of the factorized copy into the twin: its readers take the reference's value of that name
    where it holds the same tensor (snapshots share tensors), else a renamed one. Renaming the value itself would
    rename the shared tensor, and with it the caller's model's initializer."""
    same = graph.initializers.get(value.name or "")
    if same is not None and same.const_value is value.const_value:
        replacement = same
    else:
        tensor = value.const_value
        replacement = ir.Value(name=PREFIX + (value.name or ""), type=value.type, shape=value.shape,
                               const_value=None if tensor is None else ir.tensor(tensor.numpy()))
        graph.register_initializer(replacement)
    for use in list(value.uses()):
        use.node.replace_input_with(use.idx, replacement)


def stages(model: ir.Model, layers: list[ir.Node]) -> list[list[int]]:
    """``layers`` (indices) by topological stage (``analyses.stages.layer_stages``)."""
    from onnxpress.irpasses.analyses.stages import layer_stages

    return layer_stages(model, layers)


def refit_weight(weight: np.ndarray, gram: np.ndarray, cross: np.ndarray, ridge: float) -> np.ndarray:
    """M = W + (G + ridge·mean(diag G)·I)⁻¹ (C - G) W for a weight [K, N] (module docstring)."""
    from scipy.linalg import cho_factor, cho_solve

    w = weight.astype(np.float64)
    scale = float(np.mean(np.diag(gram))) or 1.0
    factor = cho_factor(gram + np.eye(len(gram)) * max(ridge, 1e-6) * scale, lower=True)
    return w + cho_solve(factor, (cross - gram) @ w)


def refit_matrix(weight: np.ndarray, gram: np.ndarray, cross: np.ndarray, damp: float, ridge: float) -> Factored:
    """Ranked directions of the refit M, whitened by the factorized model's inputs (Lᵀ M truncated)."""
    return whitened_svd(refit_weight(weight, gram, cross, ridge), gram, damp)


def refit_kernel(kernel: np.ndarray, gram: np.ndarray, cross: np.ndarray, ridge: float) -> np.ndarray:
    """The refit M of a k x k kernel [O, I, kh, kw] over its input patches, as a kernel."""
    w = kernel.astype(np.float64).reshape(kernel.shape[0], -1).T  # [(I kh kw), O]
    return refit_weight(w, gram, cross, ridge).T.reshape(kernel.shape)


def refit(c: Candidates, pair: PairedMoments, damp: float) -> Candidates:
    """``c`` with factors refit to reproduce the float layer on the factorized model's inputs (same curve)."""
    centered = c.mean is not None
    gram, cross, mean, mean_c = pair.moments(centered)
    ridge = max(damp, RIDGE * len(gram) / pair.count)
    weight = c.layer.weight.astype(np.float64)
    if c.layer.view is not None:
        if gram.shape[0] != weight.shape[0]:
            return c
        factors: Factored | ConvFactors = refit_matrix(weight, gram, cross, damp, ridge)
        shift = mean @ weight
    else:
        if gram.shape[0] != int(np.prod(weight.shape[1:])):
            return c
        energy = gram + np.outer(mean_c, mean_c) if centered else None
        factors = ConvFactors(refit_kernel(weight, gram, cross, ridge), gram, "whitened", damp, energy)
        shift = weight.reshape(weight.shape[0], -1) @ mean
    return dataclasses.replace(c, factors=factors, mean=mean_c if centered else None, shift=shift if centered else None)


def _accumulators(c: Candidates, pairs: dict[Any, PairedMoments]) -> PairedMoments:
    """The pair measuring ``c``'s input (layers reading one input through the same view share one)."""
    layer = c.layer
    key = (layer.node.inputs[0].name, ("matrix", layer.view.input_axis) if layer.view is not None else dataclasses.astuple(layer.geometry))
    if key not in pairs:
        rows = matrix_rows(layer.view.input_axis) if layer.view is not None else patch_rows(PatchGram(layer.geometry, MAX_ROWS))
        pairs[key] = PairedMoments(rows)
    return pairs[key]


def sequential_emit(model: ir.Model, found: list[Candidates], picks: list[Choice | None], samples: Any, damp: float,
                    show_progress: bool | None = None) -> list[Candidates]:
    """Rewrite ``model`` (in place) into every pick, stage by stage, each layer refit on the inputs of the model
    as factorized so far; returns the candidates as emitted (refit where measured)."""
    from onnxpress.irpasses.core.snapshot import snapshot
    from onnxpress.irpasses.quant.bodies import shared_names
    from onnxpress.irpasses.quant.collect import stream_statistics

    reference = snapshot(model)  # rewrites add nodes and constants, never write tensors: this stays float
    ambiguous = shared_names(model)
    chosen = [i for i, p in enumerate(picks) if p is not None]
    emitted = list(found)
    changed = False
    for stage in stages(model, [found[i].layer.node for i in chosen]):
        members = [chosen[j] for j in stage]
        measured = [i for i in members if changed and _measurable(found[i], ambiguous)]
        if measured:
            pairs: dict[Any, PairedMoments] = {}
            wanted: dict[str, list] = {}
            for i in measured:
                pair = _accumulators(found[i], pairs)
                name = found[i].layer.node.inputs[0].name
                if all(pair is not p.pair for p in wanted.get(name, [])):
                    wanted.setdefault(name, []).append(pair.side(0))
                    wanted.setdefault(PREFIX + name, []).append(pair.side(1))
            stream_statistics(twin_model(reference, model), samples, {n: Fanout(parts) for n, parts in wanted.items()},
                              show_progress=show_progress, description="lowrank sequential")
            for i in measured:
                pair = _accumulators(found[i], pairs)
                if not pair.empty:
                    emitted[i] = refit(found[i], pair, damp)
        for i in members:
            emitted[i].rewrite(found[i].layer.node, picks[i])
        changed = True
    return emitted


def _measurable(c: Candidates, ambiguous: set[str]) -> bool:
    """A layer whose input is a named activation (a graph input is the same in both models: nothing to refit)."""
    value = c.layer.node.inputs[0]
    return bool(value.name) and value.name not in ambiguous and not value.is_graph_input() and value.const_value is None
