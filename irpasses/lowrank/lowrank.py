"""lowrank: training-free low-rank factorization with one form and rank per layer, chosen globally.

- A MatMul/Gemm with a constant weight W [K, N] becomes MatMul(x, A [K, r]) -> MatMul(., B [r, N]), a 1x1 Conv
  two 1x1 Convs, wherever r (K + N) < K N; a k x k Conv of one group a k x 1 then 1 x k pair (spatial SVD) or
  1x1 -> k x k core -> 1x1 (Tucker-2), whichever the curve prefers at each cost (``conv``); grouped and
  depthwise convs are left alone (``layers``).
- method=whitened (SVD-LLM): truncation by output error on the calibration data (E[x xᵀ] of the inputs, the
  input patches for k x k convs, streamed in bounded memory); svd: of the weight itself. Either way each
  candidate's relative output error is measured on the calibration statistics when there are any; where the
  layer has a bias (Conv, Gemm, MatMul + Add) it takes the mean output shift, and errors are on the covariance.
- probe: each layer is factorized alone once and its effect on the model outputs measured, so the global choice
  weighs a unit of one layer's relative error by how much of it reaches the outputs.
- budget=params:f / macs:f keeps at most f of the factorizable layers' parameters / multiply-adds (counted from
  the first calibration sample's shapes): a greedy over all layers' error-vs-cost hulls (``factor``).
- fidelity='cosine>=0.999' bisects the kept share for the smallest model meeting the target on the last
  ``eval_samples`` calibration samples (left out of the statistics); ``budget`` is then the floor and names
  the measure. Without either: that fidelity target with calibration data, else params:0.8.
- cost_model=measured: a layer takes only forms timed faster than it on onnxruntime CPU (``speed``; cached).
- sequential (method=whitened, with data): forms and ranks are allocated as above on the float statistics, then
  the layers are rewritten stage by stage in topological order, each refit to reproduce the float layer's output
  from the inputs it sees in the model factorized so far (error feedback, SVD-LLM v2 style; ``sequential``): one
  more calibration pass per stage. The fidelity search refits every trial it judges; the probes weigh the
  plain factors.
Ranks are multiples of ``multiple`` (CPU GEMM tiles).
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
from onnxpress.irpasses.lowrank.factor import Choice, allocate_curves
from onnxpress.irpasses.lowrank.layers import Candidates, Layer, candidates, find_layers
from onnxpress.irpasses.quant.placement import excluded_by

DEFAULT_KEEP = 0.8
"""The kept share of parameters when neither ``budget`` nor ``fidelity`` is given and there is no data."""
DEFAULT_FIDELITY = "cosine>=0.999"
"""The target when neither ``budget`` nor ``fidelity`` is given and calibration data is."""
SEARCH_FLOOR = 0.2
"""The smallest kept share the fidelity search tries (without ``budget``)."""
SEARCH_STEPS = 7
Shape = tuple[int, ...]
PROBE_SAMPLES = 4
"""Samples each layer's probe runs on (det: 0.3 s a page, 15 layers worth probing)."""
MINOR_LAYER = 0.005
"""Layers holding less than this share of the factorizable cost are not probed (weight 1)."""


def parse_budget(text: str) -> tuple[str, float] | None:
    """'params:0.7' -> ('params', 0.7), 'macs:0.6' -> ('macs', 0.6), '' -> None; anything else, or a share
    outside (0, 1], is a PassOptionError."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(params|macs)\s*:\s*([0-9.eE+-]+)\s*", text)
    if match is None:
        raise PassOptionError(f"lowrank: budget={text!r} is not understood", hint="e.g. lowrank{budget=params:0.7} or budget=macs:0.6")
    try:
        keep = float(match.group(2))
    except ValueError:
        keep = float("nan")
    if not 0 < keep <= 1:
        raise PassOptionError(f"lowrank: budget={text!r}: the kept share must be in (0, 1]",
                              hint="e.g. budget=params:0.7 keeps 70 % of the factorizable layers' parameters")
    return match.group(1), keep


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
    """Factorize MatMul/Gemm weights and 1x1 / k x k Conv kernels into thinner layers, forms and ranks chosen globally."""

    name = "lowrank"
    lossy = True
    needs = frozenset({CONSTANTS_LIFTED})
    method: Literal["auto", "whitened", "svd"] = "auto"
    """whitened: truncation by output error on the calibration data (SVD-LLM); svd: of the weight itself;
    auto: whitened when calibration data is given, else svd."""
    budget: str = ""
    """'params:f' / 'macs:f': keep at most f in (0, 1] of the factorizable layers' parameters / multiply-adds."""
    fidelity: str = ""
    """A target such as 'cosine>=0.999': the smallest kept share meeting it (bisection), judged on the last
    ``eval_samples`` calibration samples. Default: cosine>=0.999 when calibration data is given and no budget."""
    eval_samples: int = 8
    exclude: list[str] = dataclasses.field(default_factory=list)
    """Op types or regexes over whole node names left whole; each must match some node."""
    min_elements: int = 4096
    multiple: int = 16
    """Ranks are multiples of this (CPU GEMM tiles)."""
    damp: float = 0.01
    """Whitening: H + damp·mean(diag H)·I, for inputs the calibration data does not span."""
    cost_model: Literal["measured", "none"] = "measured"
    """measured: only forms timed faster than the whole layer on onnxruntime CPU (cached per machine); none: any."""
    probe: bool = True
    """With data: factorize each layer alone once (at about half its cost) and measure how much of its relative
    error reaches the model's outputs, so the global choice weighs layers by their effect on the outputs."""
    sequential: bool = False
    """method=whitened: refit each layer, in topological stages, on the inputs of the model factorized so far to
    reproduce the float layer's output (``sequential``); one calibration pass per stage."""
    metric: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """Python API: a callable (float outputs, factorized outputs) -> score compared with the fidelity value."""
    timer: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """Python API: (one-layer model, input shape) -> ms, in place of measuring (tests)."""

    def __post_init__(self) -> None:
        self._budget = parse_budget(self.budget)
        if self.multiple < 1:
            raise PassOptionError(f"lowrank: multiple={self.multiple} must be at least 1")
        if self.eval_samples < 1:
            raise PassOptionError(f"lowrank: eval_samples={self.eval_samples} must be at least 1")
        if self.damp < 0:
            raise PassOptionError(f"lowrank: damp={self.damp} must not be negative")

    @property
    def measure(self) -> str:
        return self._budget[0] if self._budget else "params"

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        check_exclude(model, self.exclude, self.name)
        layers = find_layers(model, self.exclude, self.min_elements, self.multiple)
        if not layers:
            ctx.logger.warning("lowrank: no factorizable layer (MatMul/Gemm with a constant 2-D weight, or Conv of one group, "
                               "of at least %d elements whose factors would be smaller); the model is unchanged", self.min_elements)
            return self.result(model, False, layers=0)
        fidelity = self.fidelity or (DEFAULT_FIDELITY if self.metric is None and self._budget is None and ctx.samples is not None else "")
        searching = bool(fidelity) or self.metric is not None
        fit, judged = self._samples(model, ctx, searching)
        shapes = self._shapes(model, ctx, layers, fit)
        if self.measure == "macs" and not shapes:
            raise PassOptionError("lowrank: budget=macs:… counts multiply-adds from the tensor shapes, and this model's are not "
                                  "static", hint="give calibration data (its first sample sets the shapes) or use budget=params:…")
        grams, thin = self._grams(model, ctx, layers, fit) if fit is not None else ({}, {})
        layers, left_whole = self._without_thin(layers, thin, ctx)
        if not layers:
            ctx.extra["lowrank"] = {"layers": [], "left_whole": left_whole}
            return self.result(model, False, layers=0)
        method = self.method if self.method != "auto" else ("whitened" if grams else "svd")
        found = self._candidates(layers, grams, method, shapes, ctx)
        if self.cost_model == "measured":
            self._keep_faster(found, shapes, ctx)
        if self.probe and fit is not None:
            self._weigh(model, ctx, found, fit)
        refit = self.sequential and method == "whitened" and fit is not None
        if searching:
            keep, score = self._search(model, ctx, found, judged, fidelity, fit if refit else None)
        else:
            keep, score = self._budget[1] if self._budget else DEFAULT_KEEP, None
        picks = self._allocate(found, keep)
        if refit:
            from onnxpress.irpasses.lowrank.sequential import sequential_emit

            sequential_emit(model, found, picks, fit, self.damp, ctx.show_progress)
        else:
            if self.sequential:
                ctx.logger.warning("lowrank: sequential needs method=whitened and calibration data; the factors are not refit")
            self._emit(found, {id(c.layer.node): c.layer.node for c in found}, picks)
        remove_unused(model)
        self._record(ctx, found, picks, method, keep, score)
        ctx.extra["lowrank"]["sequential"] = refit  # the layers' errors above are those of the plain factors
        ctx.extra["lowrank"]["left_whole"] = left_whole
        return self.result(model, any(p is not None for p in picks), **self._stats(found, picks))

    # ----- measuring ------------------------------------------------------------------------------------
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

    def _shapes(self, model: ir.Model, ctx: PassContext, layers: list[Layer], samples: Any) -> dict[int, tuple[Shape, Shape]]:
        """(input, output) shape per layer: on the first calibration sample, else the static ones ({} if unknown)."""
        names = [name for layer in layers for name in (layer.node.inputs[0].name, layer.node.outputs[0].name)]
        if samples is not None:
            from onnxpress.irpasses.quant.qdq import first_sample_shapes

            found = first_sample_shapes(model, ctx, samples, [n for n in names if n])
            return {id(layer.node): (found[layer.node.inputs[0].name], found[layer.node.outputs[0].name]) for layer in layers}
        from onnxpress.irpasses.quant.collect import inferred_shapes

        static = {v.name: tuple(int(d) for d in v.shape) for v in model.graph.inputs if v.shape is not None and v.shape.is_static()}
        if len(static) < len(model.graph.inputs):
            return {}
        found = inferred_shapes(model, static, [n for n in names if n])
        if not all(n in found for n in names):
            return {}
        return {id(layer.node): (found[layer.node.inputs[0].name], found[layer.node.outputs[0].name]) for layer in layers}

    def _grams(self, model: ir.Model, ctx: PassContext, layers: list[Layer],
               samples: Any) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], dict[int, tuple[int, int]]]:
        """Per layer: (E[x xᵀ], E[x]) over the channel axis a matrix layer's weight reduces (once per input: q, k
        and v share it), or over a k x k conv's input patches; and the layers whose statistics hold fewer rows
        than inputs, as (rows, inputs). Such an E[x xᵀ] is singular: a truncation to the directions the rows
        span looks free and is not (PP-OCRv4 rec's squeeze-and-excitation convs see one pooled row per line:
        16 rows for 120 inputs, rank 16 measured at 3e-7 relative error, costing cosine 0.9992 on held-out)."""
        from onnxpress.irpasses.lowrank.conv import ChannelMean, Fanout, PatchGram
        from onnxpress.irpasses.quant.bodies import shared_names
        from onnxpress.irpasses.quant.collect import stream_statistics
        from onnxpress.irpasses.quant.gptq import GramMatrix

        def key(layer: Layer) -> Any:
            return ("matrix", layer.view.input_axis) if layer.view is not None else dataclasses.astuple(layer.geometry)

        ambiguous = shared_names(model)
        per_input: dict[str, dict[Any, Any]] = {}
        for layer in layers:
            name = layer.node.inputs[0].name
            if name and name not in ambiguous and key(layer) not in per_input.setdefault(name, {}):
                axis = layer.view.input_axis if layer.view is not None else None
                per_input[name][key(layer)] = (GramMatrix(axis=axis), ChannelMean(axis)) if axis is not None else PatchGram(layer.geometry)
        wanted = {name: Fanout([a for part in parts.values() for a in (part if isinstance(part, tuple) else (part,))])
                  for name, parts in per_input.items()}
        stream_statistics(model, samples, wanted, show_progress=ctx.show_progress, description="lowrank statistics")
        out, thin = {}, {}
        for layer in layers:
            part = per_input.get(layer.node.inputs[0].name or "", {}).get(key(layer))
            gram, mean = part if isinstance(part, tuple) else (part, part)
            if gram is not None and not gram.empty:
                hessian = gram.hessian()
                rows = gram.rows if isinstance(gram, GramMatrix) else gram.gram.rows
                if rows < hessian.shape[0]:
                    thin[id(layer.node)] = (rows, hessian.shape[0])
                out[id(layer.node)] = (hessian, mean.mean())
        return out, thin

    @staticmethod
    def _without_thin(layers: list[Layer], thin: dict[int, tuple[int, int]], ctx: PassContext) -> tuple[list[Layer], dict[str, dict]]:
        """The layers whose statistics can judge a truncation, and the others by name with (rows, inputs), warned of."""
        left = {layer.node.name: dict(zip(("rows", "inputs"), thin[id(layer.node)], strict=True))
                for layer in layers if id(layer.node) in thin}
        if left:
            ctx.logger.warning("lowrank: %d layer(s) left whole, their calibration inputs have fewer rows than input channels, so no "
                               "truncation can be judged: %s", len(left),
                               ", ".join(f"{name} ({v['rows']} rows, {v['inputs']} inputs)" for name, v in left.items()))
        return [layer for layer in layers if id(layer.node) not in thin], left

    def _candidates(self, layers: list[Layer], grams: dict[int, tuple[np.ndarray, np.ndarray]], method: str, shapes: dict,
                    ctx: PassContext) -> list[Candidates]:
        out = []
        with ctx.progress("factorizing", len(layers)) as bar:
            for layer in layers:
                out.append(candidates(layer, grams.get(id(layer.node)), method, self.damp, self.multiple, shapes.get(id(layer.node))))
                bar.advance()
        return out

    def _keep_faster(self, found: list[Candidates], shapes: dict, ctx: PassContext) -> None:
        """Drop every choice the cost model does not time faster than its whole layer (``speed.faster_choices``)."""
        from onnxpress.irpasses.lowrank.speed import TimingCache, faster_choices, measured_timer

        cache = TimingCache() if self.timer is None else None
        dropped = 0
        with ctx.progress("timing layers", len(found)) as bar:
            for c in found:
                shape = shapes.get(id(c.layer.node))
                if shape is not None:
                    before = len(c.curve.choices)
                    c.curve.choices = faster_choices(c, shape[0], self.measure, self.timer or measured_timer, cache)
                    dropped += before - len(c.curve.choices)
                bar.advance()
        if cache is not None:
            cache.save()
        ctx.logger.info("lowrank: the cost model dropped %d forms not faster than their layers on onnxruntime", dropped)

    def _weigh(self, model: ir.Model, ctx: PassContext, found: list[Candidates], samples: Any) -> None:
        """Curve weight per layer: the model outputs' relative error energy with only that layer factorized (at
        the hull vertex nearest half its cost) over the layer's own, on the first ``PROBE_SAMPLES`` samples.
        Equal relative errors are not equal harm: on PP-OCRv4 det a late 3x3 conv passes on ~1/10 of what an
        early 1x1 does."""
        import itertools

        from onnxpress.irpasses.core.snapshot import snapshot
        from onnxpress.irpasses.lowrank.factor import hull
        from onnxpress.irpasses.quant import sensitivity

        probes = [dict(s) for s in itertools.islice(iter(samples), PROBE_SAMPLES)]
        total = sum(c.curve.cost(self.measure) for c in found)
        optimization = sensitivity.evaluation_level(ctx.target)
        reference = sensitivity.run_samples(model, probes, optimization)
        energy = sum(float(np.sum(np.square(a, dtype=np.float64))) for r in reference for a in r.values())
        positions = {id(node): index for index, node in enumerate(model.graph)}
        with ctx.progress("probing layers", len(found)) as bar:
            for c in found:
                bar.advance()
                vertices = [c.curve.choices[i] for _, _, i in hull(c.curve, self.measure)[1:]]
                vertices = [v for v in vertices if v.error > 1e-9]
                if not vertices or c.curve.cost(self.measure) < MINOR_LAYER * total:  # too small to matter: weight 1
                    continue
                probe = min(vertices, key=lambda v: abs(v.cost(self.measure) - 0.5 * c.curve.cost(self.measure)))
                clone = snapshot(model)
                c.rewrite(list(clone.graph)[positions[id(c.layer.node)]], probe)
                got = sensitivity.run_samples(clone, probes, optimization)
                error = sum(float(np.sum(np.square(np.asarray(a, np.float64) - g[name])))
                            for r, g in zip(reference, got, strict=True) for name, a in r.items())
                c.curve.weight = max(error / max(energy, 1e-30) / probe.error, 1e-6)

    # ----- choosing -------------------------------------------------------------------------------------
    def _allocate(self, found: list[Candidates], keep: float) -> list[Choice | None]:
        picks = allocate_curves([c.curve for c in found], keep, self.measure)
        return [None if i is None else c.curve.choices[i] for c, i in zip(found, picks, strict=True)]

    def _search(self, model: ir.Model, ctx: PassContext, found: list[Candidates], samples: list[dict],
                fidelity: str, refit_on: Any = None) -> tuple[float, float]:
        """The smallest kept share (to 1/128 of the range) whose model meets the fidelity target: fidelity falls
        with the share near monotonically, as the greedy only ever adds cuts. ``refit_on``: calibration samples
        for the sequential refit, so each trial is judged as it will be emitted (one refit per trial)."""
        from onnxpress.irpasses.core.snapshot import snapshot
        from onnxpress.irpasses.lowrank.sequential import sequential_emit
        from onnxpress.irpasses.quant import sensitivity

        metric, threshold, text = sensitivity.resolve_metric(fidelity, self.metric)
        optimization = sensitivity.evaluation_level(ctx.target)
        reference = sensitivity.run_samples(model, samples, optimization)
        positions = {id(node): index for index, node in enumerate(model.graph)}
        scores: dict[float, float] = {}

        def score(keep: float) -> float:
            clone = snapshot(model)
            nodes = list(clone.graph)  # a snapshot keeps the node order
            if refit_on is None:
                self._emit(found, {id(c.layer.node): nodes[positions[id(c.layer.node)]] for c in found}, self._allocate(found, keep))
            else:
                moved = [dataclasses.replace(c, layer=dataclasses.replace(c.layer, node=nodes[positions[id(c.layer.node)]])) for c in found]
                sequential_emit(clone, moved, self._allocate(found, keep), refit_on, self.damp, False)
            scores[keep] = metric(reference, sensitivity.run_samples(clone, samples, optimization))
            return scores[keep]

        low, high = (self._budget[1] if self._budget else SEARCH_FLOOR), 1.0
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
        ctx.logger.info("lowrank: keeping %.3f of the %s meets %s (%.5f) after %d trials", high, self.measure, text, scores[high],
                        len(scores))
        return high, scores[high]

    # ----- emitting -------------------------------------------------------------------------------------
    @staticmethod
    def _emit(found: list[Candidates], nodes: dict[int, ir.Node], picks: list[Choice | None]) -> None:
        """Rewrite every layer with a choice (``nodes``: the layer's node, or its copy in a snapshot)."""
        for c, choice in zip(found, picks, strict=True):
            if choice is not None:
                c.rewrite(nodes[id(c.layer.node)], choice)

    @staticmethod
    def _stats(found: list[Candidates], picks: list[Choice | None]) -> dict[str, int]:
        params = [(c.curve.params, c.curve.macs, p) for c, p in zip(found, picks, strict=True)]
        stats = {"layers": len(found), "factorized": sum(p is not None for *_, p in params),
                 "params_before": sum(w for w, _, _ in params), "params_after": sum(w if p is None else p.params for w, _, p in params),
                 "macs_before": round(sum(m for _, m, _ in params)),
                 "macs_after": round(sum(m if p is None else p.macs for _, m, p in params))}
        stats["kept_permille"] = round(1000 * stats["params_after"] / max(stats["params_before"], 1))
        stats["macs_kept_permille"] = round(1000 * stats["macs_after"] / max(stats["macs_before"], 1))
        return stats

    def _record(self, ctx: PassContext, found: list[Candidates], picks: list[Choice | None], method: str, keep: float,
                score: float | None) -> None:
        """Per-layer forms, ranks and relative output errors, and each layer's error-vs-cost curve, where the report
        and the CLI find them."""
        table = []
        for c, p in zip(found, picks, strict=True):
            table.append({"layer": c.layer.node.name, "shape": list(c.shape),
                          "form": None if p is None else p.kind, "rank": None if p is None else "x".join(map(str, p.ranks)),
                          "relative_error": 0.0 if p is None else p.error, "output_weight": c.curve.weight,
                          "params": c.curve.params, "macs": c.curve.macs,
                          "curve": [{"form": ch.kind, "ranks": list(ch.ranks), "params": ch.params, "macs": ch.macs, "error": ch.error}
                                    for ch in c.curve.choices]})
        ctx.extra["lowrank"] = {"method": method, "measure": self.measure, "keep": keep, "fidelity": score, "layers": table}
