"""lowrank: training-free low-rank factorization with one rank per layer, chosen globally.

A MatMul (or Gemm) with a constant weight W [K, N] becomes MatMul(x, A [K, r]) -> MatMul(., B [r, N]), and a
1x1 Conv of one group two 1x1 Convs (strides on the first, bias on the second), wherever r (K + N) < K N.
k x k and grouped convs are left alone.

- method=whitened (SVD-LLM): the SVD of Lᵀ W with H = E[x xᵀ] = L Lᵀ of the layer's input on the
  calibration data, so truncation minimizes the output error, not the weight error (``factor``); svd: the
  SVD of W. Both measure each layer's relative output error per discarded direction when data is given.
- budget=params:f keeps at most f of the factorizable layers' parameters: a greedy over all layers cuts rank in
  chunks of ``multiple`` where it adds the least relative error per parameter saved (``factor.allocate``).
- fidelity='cosine>=0.999' bisects the kept share for the smallest model meeting the target on the last
  ``eval_samples`` calibration samples (left out of the statistics); ``budget`` is then the floor.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.cleanup.dead_code import remove_unused
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED
from onnxpress.irpasses.lowrank.factor import Factored, allocate, largest_paying_rank, plain_svd, whitened_svd
from onnxpress.irpasses.quant.gptq import MatrixView, matrix_view
from onnxpress.irpasses.quant.placement import excluded_by
from onnxpress.irpasses.quant.qparams import add_constant

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)
DEFAULT_KEEP = 0.8
"""The kept share of parameters when neither ``budget`` nor ``fidelity`` is given."""
SEARCH_FLOOR = 0.2
"""The smallest kept share the fidelity search tries (without ``budget``)."""
SEARCH_STEPS = 7


@dataclasses.dataclass
class Layer:
    node: ir.Node
    view: MatrixView

    @property
    def weight(self) -> np.ndarray:
        return self.view.to_kn(self.node.inputs[1].const_value.numpy().astype(np.float32))


def parse_budget(text: str) -> float | None:
    """'params:0.7' -> 0.7 (None for ''); anything else, or a share outside (0, 1], is a PassOptionError."""
    if not text:
        return None
    match = re.fullmatch(r"\s*params\s*:\s*([0-9.eE+-]+)\s*", text)
    if match is None:
        raise PassOptionError(f"lowrank: budget={text!r} is not understood", hint="e.g. lowrank{budget=params:0.7}")
    try:
        keep = float(match.group(1))
    except ValueError:
        keep = float("nan")
    if not 0 < keep <= 1:
        raise PassOptionError(f"lowrank: budget={text!r}: the kept share of parameters must be in (0, 1]",
                              hint="e.g. budget=params:0.7 keeps 70 % of the factorizable layers' parameters")
    return keep


def check_exclude(model: ir.Model, patterns: list[str], what: str) -> None:
    """Every ``exclude`` entry must match some node (op type or whole name): a typo would silently exclude nothing."""
    nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            raise PassOptionError(f"{what}: exclude entry {pattern!r} is not a valid regex ({err})") from err
        if not any(excluded_by(node, [pattern]) for node in nodes):
            raise PassOptionError(f"{what}: exclude entry {pattern!r} matches no node name or op type",
                                  hint="entries are op types or regexes over whole node names")


@dataclasses.dataclass
class LowRank(Pass):
    """Factorize MatMul/Gemm weights and 1x1 Conv kernels into two thinner layers, ranks chosen globally."""

    name = "lowrank"
    lossy = True
    needs = frozenset({CONSTANTS_LIFTED})
    method: Literal["auto", "whitened", "svd"] = "auto"
    """whitened: truncation by output error on the calibration data (SVD-LLM); svd: of the weight itself;
    auto: whitened when calibration data is given, else svd."""
    budget: str = ""
    """'params:f': keep at most f in (0, 1] of the factorizable layers' parameters (default 0.8 without fidelity)."""
    fidelity: str = ""
    """A target such as 'cosine>=0.999': the smallest kept share meeting it (bisection), judged on the last
    ``eval_samples`` calibration samples."""
    eval_samples: int = 8
    exclude: list[str] = dataclasses.field(default_factory=list)
    """Op types or regexes over whole node names left whole; each must match some node."""
    min_elements: int = 4096
    multiple: int = 16
    """Ranks are multiples of this (CPU GEMM tiles)."""
    damp: float = 0.01
    """Whitening: H + damp·mean(diag H)·I, for inputs the calibration data does not span."""
    metric: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """Python API: a callable (float outputs, factorized outputs) -> score compared with the fidelity value."""

    def __post_init__(self) -> None:
        self._keep = parse_budget(self.budget)
        if self.multiple < 1:
            raise PassOptionError(f"lowrank: multiple={self.multiple} must be at least 1")
        if self.eval_samples < 1:
            raise PassOptionError(f"lowrank: eval_samples={self.eval_samples} must be at least 1")
        if self.damp < 0:
            raise PassOptionError(f"lowrank: damp={self.damp} must not be negative")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        check_exclude(model, self.exclude, self.name)
        layers = self._layers(model)
        if not layers:
            ctx.logger.warning("lowrank: no factorizable layer (MatMul/Gemm with a constant 2-D weight or 1x1 Conv "
                               "of at least %d elements whose factors would be smaller); the model is unchanged", self.min_elements)
            return self.result(model, False, layers=0)
        searching = bool(self.fidelity) or self.metric is not None
        fit, judged = self._samples(model, ctx, searching)
        grams = self._grams(model, ctx, layers, fit) if fit is not None else {}
        method = self.method if self.method != "auto" else ("whitened" if grams else "svd")
        factored = self._factor(layers, grams, method, ctx)
        if searching:
            keep, score = self._search(model, ctx, layers, factored, judged)
        else:
            keep, score = self._keep if self._keep is not None else DEFAULT_KEEP, None
        ranks = dict(zip((id(layer.node) for layer in layers), allocate(factored, keep, self.multiple), strict=True))
        before = sum(f.shape[0] * f.shape[1] for f in factored)
        after = self._emit(layers, factored, ranks)
        remove_unused(model)
        self._record(ctx, layers, factored, ranks, method, keep, score)
        stats = {"layers": len(layers), "factorized": sum(r is not None for r in ranks.values()), "params_before": before,
                 "params_after": after, "kept_permille": round(1000 * after / before)}
        return self.result(model, stats["factorized"] > 0, **stats)

    # ----- choosing -------------------------------------------------------------------------------------
    def _layers(self, model: ir.Model) -> list[Layer]:
        found = []
        for node in model.graph:  # main graph only: a body's weight would be rewritten in every iteration alike
            if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.inputs) < 2:
                continue
            weight = node.inputs[1]
            if (weight is None or weight.const_value is None or weight.is_graph_input() or len(list(weight.uses())) != 1
                    or weight.const_value.dtype not in FLOAT_TYPES or weight.const_value.size < self.min_elements
                    or excluded_by(node, self.exclude) is not None):
                continue
            shape = tuple(weight.const_value.shape.numpy())
            view = matrix_view(node.op_type, shape, {k: a.value for k, a in node.attributes.items()})
            if view is None:
                continue
            k, n = view.to_kn(np.broadcast_to(np.float32(0), shape)).shape
            if largest_paying_rank(k, n, self.multiple):
                found.append(Layer(node, view))
        return found

    def _samples(self, model: ir.Model, ctx: PassContext, searching: bool) -> tuple[Any, list[dict]]:
        """(samples for the statistics or None, samples the fidelity search judges on)."""
        if ctx.samples is None and not searching:
            return None, []
        from onnxpress.irpasses.quant.data import calibration_samples, fit_and_judge

        samples = calibration_samples(ctx, model, False, self.name)
        if not searching:
            return samples, []
        fit, judged, disjoint = fit_and_judge(samples, self.eval_samples)
        if not disjoint:
            ctx.logger.warning("lowrank: fewer than %d calibration samples: the fidelity search judges on samples "
                               "the statistics came from (optimistic)", 2 * self.eval_samples)
        return fit, judged

    def _grams(self, model: ir.Model, ctx: PassContext, layers: list[Layer], samples: Any) -> dict[str, np.ndarray]:
        """E[x xᵀ] per layer input name over the channel axis the weight reduces (once for q, k and v)."""
        from onnxpress.irpasses.quant.bodies import shared_names
        from onnxpress.irpasses.quant.collect import stream_statistics
        from onnxpress.irpasses.quant.gptq import GramMatrix

        ambiguous = shared_names(model)
        wanted = {layer.node.inputs[0].name: GramMatrix(axis=layer.view.input_axis) for layer in layers}
        wanted = {name: gram for name, gram in wanted.items() if name and name not in ambiguous}
        stats = stream_statistics(model, samples, wanted, show_progress=ctx.show_progress, description="lowrank statistics")
        return {name: gram.hessian() for name, gram in stats.items() if not gram.empty}

    def _factor(self, layers: list[Layer], grams: dict[str, np.ndarray], method: str, ctx: PassContext) -> list[Factored]:
        out = []
        with ctx.progress("factorizing", len(layers)) as bar:
            for layer in layers:
                weight = layer.weight
                gram = grams.get(layer.node.inputs[0].name or "")
                gram = gram if gram is not None and gram.shape[0] == weight.shape[0] else None
                out.append(whitened_svd(weight, gram, self.damp) if method == "whitened" and gram is not None
                           else plain_svd(weight, gram))
                bar.advance()
        return out

    def _search(self, model: ir.Model, ctx: PassContext, layers: list[Layer], factored: list[Factored],
                samples: list[dict]) -> tuple[float, float]:
        """The smallest kept share (to 1/128 of the range) whose model meets the fidelity target: fidelity falls
        with the share near monotonically, as the greedy only ever adds cuts."""
        from onnxpress.irpasses.core.snapshot import snapshot
        from onnxpress.irpasses.quant import sensitivity

        metric, threshold, text = sensitivity.resolve_metric(self.fidelity, self.metric)
        optimization = sensitivity.evaluation_level(ctx.target)
        reference = sensitivity.run_samples(model, samples, optimization)
        positions = {id(node): index for index, node in enumerate(model.graph)}
        scores: dict[float, float] = {}

        def score(keep: float) -> float:
            clone = snapshot(model)
            nodes = list(clone.graph)  # a snapshot keeps the node order
            trial = [Layer(nodes[positions[id(layer.node)]], layer.view) for layer in layers]
            ranks = dict(zip((id(t.node) for t in trial), allocate(factored, keep, self.multiple), strict=True))
            self._emit(trial, factored, ranks)
            scores[keep] = metric(reference, sensitivity.run_samples(clone, samples, optimization))
            return scores[keep]

        low, high = (self._keep if self._keep is not None else SEARCH_FLOOR), 1.0
        with ctx.progress("rank search", SEARCH_STEPS + 1) as bar:
            if score(low) >= threshold:
                high = low
            else:
                for _ in range(SEARCH_STEPS):
                    bar.advance()
                    middle = (low + high) / 2
                    if score(middle) >= threshold:
                        high = middle
                    else:
                        low = middle
        if high == 1.0 and 1.0 not in scores:
            ctx.logger.warning("lowrank: %s not met at any tried share above %.3f: the model stays whole", text, low)
            scores[1.0] = metric(reference, reference)
        ctx.logger.info("lowrank: keeping %.3f of the parameters meets %s (%.5f) after %d trials", high, text, scores[high], len(scores))
        return high, scores[high]

    # ----- emitting -------------------------------------------------------------------------------------
    def _emit(self, layers: list[Layer], factored: list[Factored], ranks: dict[int, int | None]) -> int:
        """Rewrite every layer with a rank into its two factors; the parameters the layers hold afterwards."""
        total = 0
        for layer, factors in zip(layers, factored, strict=True):
            rank = ranks[id(layer.node)]
            k, n = factors.shape
            if rank is None:
                total += k * n
                continue
            total += rank * (k + n)
            first, second = factors.factors(rank)
            dtype = layer.node.inputs[1].const_value.dtype.numpy()
            _split(layer, first.astype(dtype), second.astype(dtype))
        return total

    def _record(self, ctx: PassContext, layers: list[Layer], factored: list[Factored], ranks: dict[int, int | None],
                method: str, keep: float, score: float | None) -> None:
        """Per-layer ranks and relative output errors where the report and the CLI find them."""
        table = [{"layer": layer.node.name, "shape": list(f.shape), "rank": ranks[id(layer.node)],
                  "relative_error": f.relative_error(ranks[id(layer.node)])} for layer, f in zip(layers, factored, strict=True)]
        ctx.extra["lowrank"] = {"method": method, "keep": keep, "fidelity": score, "layers": table}


def _split(layer: Layer, first: np.ndarray, second: np.ndarray) -> None:
    """node(x, W) -> node'(node0(x, A), B): the original node keeps its bias, attributes and output."""
    node = layer.node
    graph = node.graph
    assert graph is not None
    base = node.inputs[1].name or node.name or "weight"
    if node.op_type == "Conv":  # [K, r] / [r, N] back to kernels [r, K, 1, 1] / [N, r, 1, 1]
        head_weight = _constant(graph, f"{base}_lowrank_a", np.ascontiguousarray(first.T)[:, :, None, None])
        attributes = {k: a.value for k, a in node.attributes.items() if k in ("strides", "dilations", "auto_pad")}
        head = ir.node("Conv", [node.inputs[0], head_weight], attributes=attributes, name=f"{node.name}_lowrank")
        node.attributes.pop("strides", None)
        tail = np.ascontiguousarray(second.T)[:, :, None, None]
    else:
        head = ir.node("MatMul", [node.inputs[0], _constant(graph, f"{base}_lowrank_a", first)], name=f"{node.name}_lowrank")
        tail = second.T if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) else second
    if node.outputs[0].dtype is not None:
        head.outputs[0].dtype = node.outputs[0].dtype
    graph.insert_before(node, head)
    node.replace_input_with(0, head.outputs[0])
    node.replace_input_with(1, _constant(graph, f"{base}_lowrank_b", np.ascontiguousarray(tail)))


def _constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """An initializer with its type and shape on the value: calibration pieces that take it as an input need them."""
    value = add_constant(graph, name, array)
    value.dtype = value.const_value.dtype
    value.shape = ir.Shape(array.shape)
    return value
