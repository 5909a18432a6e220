"""prune: one-shot N:M (2:4, 4:8, 1:4...) or unstructured sparsity on MatMul/Gemm weights and Conv kernels.

Every weight is read as [K, N] with K the reduction axis: a MatMul's [K, N]; a Gemm's B (transposed when
``transB``); a Conv kernel [O, I/g, *k] as [I/g * prod(k), O] (input channels x kernel window, in the
kernel's own order). N:M groups are m consecutive entries along K per output column, the layout sparse
tensor cores and ``SparseMatMul`` read (``kernels.formats.nm_positions``). The pruned weight replaces the
initializer as a new tensor of the same dtype and shape: the file stays standard ONNX, and
``legalize-kernels`` later turns 2:4 MatMuls into ``SparseMatMul`` where that is faster.

Methods:
- magnitude: keep the largest |w| (N:M: per group; unstructured: over the whole layer).
- wanda (Sun et al., 2023): keep the largest |w_kj| * sqrt(E[x_k²]) (N:M: per group; unstructured: per
  output column, as the paper compares per output).
- sparsegpt (Frantar & Alistarh, 2023): the mask from w² / [H⁻¹]_kk² as the sweep reaches each group (or
  lazy block of ``block`` rows, unstructured), and every pruned weight's error moved onto the rows not yet
  pruned with H = E[x xᵀ] (``nm.sparsegpt``, GPTQ's sweep). Convs use the Gram matrix of their im2col rows,
  one per group.

A layer whose reduction length the pattern's m does not divide (a CNN's stem conv: 3 x 3 x 3 = 27; a
depthwise conv: 9) cannot hold the pattern: it stays dense, with a warning, and is listed with its reason
in ``ctx.extra["pruning"]["skipped"]``. When *no* layer can take the pattern, the pass raises a
PassOptionError naming the layers, their reduction lengths and the pattern: the pattern does not fit the
model, and a silent no-op would hide that.

``fidelity`` (e.g. 'cosine>=0.999') keeps the layers that hurt most dense until the target holds, by the
quantizers' sensitivity search with two levels, pruned and dense, judged on the last ``eval_samples``
calibration samples (left out of the statistics). Per-layer details (method, sparsity, kept importance,
relative output error on the calibration data) and the search table go to ``ctx.extra["pruning"]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.clustering.cluster import MeanSquare
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED
from onnxpress.irpasses.quant.collect import Accumulator
from onnxpress.irpasses.quant.gptq import GramMatrix, MatrixView, Prepared, matrix_view, prepare
from onnxpress.irpasses.quant.placement import excluded_by
from onnxpress.irpasses.quant.sensitivity import FLOAT, FULL
from onnxpress.irpasses.sparsity.nm import choose_mask, parse_pattern, sparsegpt

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)
UNFIT = "is not a multiple of"
"""Marks the reason of a layer the pattern does not divide (the one reason that can make the pass refuse)."""
MAX_PATCH_ROWS = 4096
"""im2col rows sampled per calibration sample and Conv input (as ``GramMatrix`` samples activation rows)."""


# ----- Conv inputs as im2col rows ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """What maps a Conv input to the rows its kernel multiplies (im2col)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]  # ONNX order: every begin, then every end
    dilations: tuple[int, ...]
    auto_pad: str
    group: int

    @classmethod
    def of(cls, node: ir.Node, weight_shape: tuple[int, ...]) -> ConvGeometry:
        def ints(name: str, default: int) -> tuple[int, ...]:
            attribute = node.attributes.get(name)
            return tuple(attribute.as_ints()) if attribute is not None else (default,) * rank

        rank = len(weight_shape) - 2
        pads = ints("pads", 0)
        return cls(tuple(weight_shape[2:]), ints("strides", 1), pads if len(pads) == 2 * rank else (0,) * 2 * rank,
                   ints("dilations", 1), node.attributes.get_string("auto_pad", "NOTSET"), node.attributes.get_int("group", 1))

    def padding(self, spatial: tuple[int, ...]) -> list[tuple[int, int]]:
        """(begin, end) per spatial axis, SAME_UPPER/SAME_LOWER resolved for this input size."""
        rank = len(self.kernel)
        if self.auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
            return [(0, 0)] * rank if self.auto_pad == "VALID" else list(zip(self.pads[:rank], self.pads[rank:], strict=True))
        out = []
        for size, k, s, d in zip(spatial, self.kernel, self.strides, self.dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            out.append((small, large) if self.auto_pad == "SAME_UPPER" else (large, small))
        return out


def patch_rows(x: np.ndarray, geometry: ConvGeometry, rng: np.random.Generator, max_rows: int) -> np.ndarray:
    """At most ``max_rows`` (a random subset) of the im2col rows of a Conv input x [B, C, *spatial]:
    [rows, group, prod(kernel) * C / group], each row in ``conv_view``'s [*k, I/g] order (channels innermost)."""
    x = np.asarray(x)
    rank = len(geometry.kernel)
    padded = np.pad(x, [(0, 0), (0, 0), *geometry.padding(x.shape[2:])])
    window = [(k - 1) * d + 1 for k, d in zip(geometry.kernel, geometry.dilations, strict=True)]
    view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=tuple(range(2, 2 + rank)))
    view = view[(slice(None), slice(None), *(slice(None, None, s) for s in geometry.strides),
                 *(slice(None, None, d) for d in geometry.dilations))]  # [B, C, *out, *kernel], no copy
    positions = (view.shape[0], *view.shape[2 : 2 + rank])
    count = int(np.prod(positions))
    chosen = np.sort(rng.choice(count, max_rows, replace=False)) if count > max_rows else np.arange(count)
    index = np.unravel_index(chosen, positions)
    rows = view[(index[0], slice(None), *index[1:])]  # advanced indices around a slice: [rows, C, *kernel]
    rows = rows.reshape(len(chosen), geometry.group, -1, *rows.shape[2:])  # [rows, group, I/g, *kernel]
    return np.moveaxis(rows, 2, -1).reshape(len(chosen), geometry.group, -1)


class PatchStatistics:
    """Feeds the sampled im2col rows of a Conv input to one accumulator per group of the Conv."""

    def __init__(self, geometry: ConvGeometry, make: Callable[[], Any], seed: int = 0) -> None:
        self.geometry = geometry
        self.groups = [make() for _ in range(geometry.group)]
        self.rng = np.random.default_rng(seed)

    def update(self, values: np.ndarray) -> None:
        rows = patch_rows(values, self.geometry, self.rng, MAX_PATCH_ROWS)
        for g, accumulator in enumerate(self.groups):
            accumulator.update(rows[:, g])


class Fanout:
    """Several accumulators of one tensor (layers of different kinds reading the same input)."""

    def __init__(self) -> None:
        self.parts: dict[Any, Any] = {}

    def update(self, values: np.ndarray) -> None:
        for part in self.parts.values():
            part.update(values)


# ----- layers -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Target:
    """A prunable layer: its weight read as [K, N] (K = reduction axis) and the input statistic it needs."""

    node: ir.Node
    view: MatrixView
    geometry: ConvGeometry | None  # None: a MatMul/Gemm, whose input's last axis is K

    @property
    def value(self) -> ir.Value:
        return self.node.inputs[1]

    @property
    def groups(self) -> int:
        return self.geometry.group if self.geometry is not None else 1

    @property
    def key(self) -> tuple[str, ConvGeometry | None]:
        return self.node.inputs[0].name or "", self.geometry

    def kn(self) -> np.ndarray:
        return self.view.to_kn(self.value.const_value.numpy().astype(np.float32))


@dataclasses.dataclass
class Statistic:
    """Per group of a layer: E[x²] per reduction entry, and E[x xᵀ] when SparseGPT needs it."""

    squares: list[np.ndarray]
    grams: list[np.ndarray] | None = None


@dataclasses.dataclass
class Pruned:
    array: np.ndarray  # the new weight, the original's shape and dtype
    record: dict[str, Any]


def conv_view(weight_shape: tuple[int, ...]) -> MatrixView:
    """A Conv kernel [O, I/g, *k] as [prod(k) * I/g, O], input channels innermost along K: N:M groups then run
    along input channels at each kernel position, the layout TensorRT's sparse convolutions take (apex's ASP
    masks a [O, I, kh, kw] kernel as [O, kh, kw, I])."""

    def to_kn(w: np.ndarray) -> np.ndarray:
        return np.moveaxis(w, 1, -1).reshape(w.shape[0], -1).T

    def from_kn(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return np.moveaxis(w.T.reshape(shape[0], *shape[2:], shape[1]), -1, 1)

    return MatrixView(1, to_kn, from_kn)


def _columns(per_group: list[np.ndarray], n: int) -> np.ndarray:
    """Per-group vectors over K -> [K, N], column j taking its group's (j // (N / groups))."""
    return np.repeat(np.stack(per_group, axis=1), n // len(per_group), axis=1)


@dataclasses.dataclass
class Prune(Pass):
    """Prune MatMul/Gemm weights and Conv kernels to N:M (2:4...) or unstructured sparsity, one-shot."""

    name = "prune"
    lossy = True
    needs = frozenset({CONSTANTS_LIFTED})
    pattern: str = "2:4"
    """n:m (m 4 or 8): at most n non-zeros in every m consecutive weights along the reduction axis of each
    output column; or 'unstructured' (see sparsity)."""
    sparsity: float = 0.5
    """Share of weights pruned with pattern=unstructured, in (0, 1)."""
    method: Literal["auto", "magnitude", "wanda", "sparsegpt"] = "auto"
    """magnitude: largest |w|; wanda: largest |w| * sqrt(E[x²]); sparsegpt: OBS saliency with error feedback
    (E[x xᵀ]); auto: sparsegpt when calibration data is given, else magnitude."""
    exclude: list[str] = dataclasses.field(default_factory=list)
    """Op types or regexes over node names that stay dense."""
    min_elements: int = 4096
    fidelity: str = ""
    """A target such as 'cosine>=0.999': the most sensitive layers stay dense until it holds, judged on the
    last ``eval_samples`` calibration samples (left out of the statistics)."""
    eval_samples: int = 8
    damp: float = 0.01
    """SparseGPT: dampening of E[x xᵀ], as a share of its mean diagonal."""
    block: int = 128
    """SparseGPT: rows per lazy batch (rounded down to a multiple of m); unstructured, also the rows whose
    mask is chosen together."""
    sequential: bool = False
    """sparsegpt / wanda: each stage of layers (those no other pruned layer feeds first, then the layers they
    feed, ...) takes its statistics from the model with the earlier stages already pruned, so it compensates
    the error that reaches it (SparseGPT's sequential mode; one calibration run per stage). Off by default:
    measured 2:4 on every layer with permutation, SparseGPT, sequential against one run over the dense model:
    MiniLM retrieval 0.597 / 0.622 (cosine 0.842 / 0.838), det IoU 0.909 / 0.906, rec characters 0.938 / 0.928,
    within the run-to-run spread of the time-budgeted permutation search (+-0.015), at 1.4-2x the time."""
    metric: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """Python API: a callable (float outputs, pruned outputs) -> score compared with the fidelity value."""

    def __post_init__(self) -> None:
        nm = self.nm
        if not 0 < self.sparsity < 1:
            raise PassOptionError(f"prune: sparsity={self.sparsity} must be in (0, 1)",
                                  hint="e.g. prune{pattern=unstructured,sparsity=0.5}")
        if nm is not None and self.sparsity != 0.5:
            n, m = nm
            raise PassOptionError(f"prune: sparsity={self.sparsity} applies to pattern=unstructured only "
                                  f"({self.pattern} keeps {n} of every {m})")
        if self.damp <= 0:
            raise PassOptionError(f"prune: damp={self.damp} must be positive")
        if self.block < 1 or self.eval_samples < 1:
            raise PassOptionError(f"prune: block={self.block} and eval_samples={self.eval_samples} must be at least 1")

    @property
    def nm(self) -> tuple[int, int] | None:
        """(n, m) of the pattern, None for unstructured."""
        return parse_pattern(self.pattern)

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        targets, skipped = self._targets(model)
        self._check_fit(ctx, targets, skipped)
        self._info: dict[str, Any] = {"pattern": self.pattern, "skipped": skipped, "layers": []}
        ctx.extra["pruning"] = self._info
        if not targets:
            return self.result(model, False, layers=0, skipped=len(skipped))
        searching = bool(self.fidelity) or self.metric is not None
        fit, judged = None, []  # None: every calibration sample, validated when first needed
        if searching:
            from onnxpress.irpasses.quant.data import calibration_samples, fit_and_judge

            fit, judged, disjoint = fit_and_judge(calibration_samples(ctx, model, False, self.name), self.eval_samples)
            if not disjoint:
                ctx.logger.warning("prune: fewer than %d calibration samples: the fidelity search judges on samples "
                                   "the statistics came from (optimistic)", 2 * self.eval_samples)
        method = self.method if self.method != "auto" else ("sparsegpt" if ctx.samples is not None else "magnitude")
        self._info["method"] = method
        self._pruned: dict[int, Pruned] = {}
        self._prepared: dict[tuple[Any, int], Prepared] = {}
        self._pinned = [t.value.const_value for t in targets]  # keeps the ids of the original weights valid
        stages = _stages(model, targets) if self.sequential and method != "magnitude" else [targets]
        self._info["stages"] = len(stages)
        with ctx.progress("pruning", len(targets)) as bar:
            for number, stage in enumerate(stages):
                statistics = self._statistics(model, ctx, stage, fit, method)
                for target in stage:
                    self._pruned[id(target.value.const_value)] = self._prune(target, statistics.get(target.key), method)
                    bar.advance()
                if number + 1 < len(stages):  # the next stages see this one pruned
                    for target in stage:
                        pruned = self._pruned[id(target.value.const_value)]
                        target.value.const_value = ir.tensor(pruned.array, name=target.value.name)
        for target, original in zip(targets, self._pinned, strict=True):  # the search and _emit start from the originals
            target.value.const_value = original
        levels = self._search(model, ctx, targets, judged) if searching else None
        emitted = self._emit(model, levels)
        return self._finish(model, emitted, len(targets), skipped)

    def _check_fit(self, ctx: PassContext, targets: list[Target], skipped: dict[str, str]) -> None:
        """Layers the pattern does not divide stay dense with a warning; when the pattern fits no layer at all,
        that is a mistake a silent no-op would hide: a PassOptionError naming them."""
        unfit = [f"{name} ({why})" for name, why in skipped.items() if UNFIT in why]
        if not unfit:
            return
        listed = "; ".join(unfit[:5]) + (f" and {len(unfit) - 5} more" if len(unfit) > 5 else "")
        if not targets:
            raise PassOptionError(f"prune: pattern={self.pattern} fits no layer: {listed}",
                                  hint="choose a pattern whose m divides the reduction length, or 'unstructured'")
        ctx.logger.warning("prune: %d layers stay dense, the pattern %s does not divide their reduction axis: %s",
                           len(unfit), self.pattern, listed)

    def _finish(self, model: ir.Model, emitted: list[Pruned], candidates: int, skipped: dict[str, str]) -> PassResult:
        records = [p.record for p in emitted]
        weights, zeros = sum(r["weights"] for r in records), sum(r["zeros"] for r in records)
        self._info.update(layers=records, sparsity=zeros / weights if weights else 0.0)
        return self.result(model, bool(emitted), layers=len(emitted), skipped=len(skipped), dense=candidates - len(emitted),
                           weights=weights, zeros=zeros)

    # ----- choosing -------------------------------------------------------------------------------------
    def _targets(self, model: ir.Model) -> tuple[list[Target], dict[str, str]]:
        """The layers to prune, and those with a constant float weight that stay dense, with the reason."""
        targets, skipped = [], {}
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.inputs) < 2:
                continue
            value = node.inputs[1]
            if value is None or value.const_value is None or value.is_graph_input() or value.const_value.dtype not in FLOAT_TYPES:
                continue
            target, reason = self._target(node, value)
            if target is not None:
                targets.append(target)
            else:
                skipped[node.name or f"<unnamed {node.op_type}>"] = reason
        return targets, skipped

    def _target(self, node: ir.Node, value: ir.Value) -> tuple[Target | None, str]:
        shape = tuple(value.const_value.shape)
        pattern = excluded_by(node, self.exclude)
        if pattern is not None:
            return None, f"excluded by {pattern!r}"
        if value.const_value.size < self.min_elements:
            return None, f"{value.const_value.size} weights, fewer than min_elements={self.min_elements}"
        if len(value.uses()) > 1:
            return None, "weight shared with another node"
        if node.op_type == "Conv":
            view, geometry = (conv_view(shape), ConvGeometry.of(node, shape)) if len(shape) >= 3 else (None, None)
        else:
            view, geometry = matrix_view(node.op_type, shape, {k: a.value for k, a in node.attributes.items()}), None
        if view is None:
            return None, f"weight {list(shape)} has no [K, N] reading (a Gemm with transA, or not 2-D)"
        k = view.to_kn(np.broadcast_to(np.float32(0), shape)).shape[0]  # no weight read or copied
        nm = self.nm
        if nm is not None and k % nm[1]:
            return None, f"reduction length {k} {UNFIT} {nm[1]} (pattern {self.pattern})"
        return Target(node, view, geometry), ""

    # ----- statistics -----------------------------------------------------------------------------------
    def _statistics(self, model: ir.Model, ctx: PassContext, targets: list[Target], samples: Any,
                    method: str) -> dict[tuple[str, ConvGeometry | None], Statistic]:
        """E[x²] (wanda) or E[x xᵀ] (sparsegpt) per layer input and Conv geometry, from one calibration run."""
        if method == "magnitude":
            return {}
        from onnxpress.irpasses.quant.bodies import shared_names
        from onnxpress.irpasses.quant.collect import stream_statistics
        from onnxpress.irpasses.quant.data import calibration_samples

        if samples is None:
            samples = calibration_samples(ctx, model, False, self.name)
        make: Callable[[], Accumulator] = GramMatrix if method == "sparsegpt" else MeanSquare
        ambiguous = shared_names(model)
        accumulators: dict[str, Fanout] = {}
        for target in targets:
            name, geometry = target.key
            if not name or name in ambiguous:
                continue
            parts = accumulators.setdefault(name, Fanout()).parts
            if geometry not in parts:
                parts[geometry] = make() if geometry is None else PatchStatistics(geometry, make, ctx.seed)
        fed = stream_statistics(model, samples, accumulators, show_progress=ctx.show_progress, description="prune statistics")
        out = {}
        for name, fanout in fed.items():
            for geometry, part in fanout.parts.items():
                statistic = _statistic(part.groups if geometry is not None else [part])
                if statistic is not None:
                    out[(name, geometry)] = statistic
        return out

    # ----- pruning --------------------------------------------------------------------------------------
    def _prune(self, target: Target, statistic: Statistic | None, method: str) -> Pruned:
        kn = target.kn()
        if method != "magnitude" and statistic is None:
            method = "magnitude (no calibration statistics for its input)"
        importance = np.abs(kn) if statistic is None else np.abs(kn) * np.sqrt(_columns(statistic.squares, kn.shape[1]))
        if method == "sparsegpt":
            assert statistic is not None and statistic.grams is not None
            pruned, mask = self._sparsegpt(target, kn, statistic.grams)
        else:
            scores = importance if method == "wanda" else np.abs(kn)
            mask = choose_mask(scores, self.nm, self.sparsity, 0 if method == "wanda" else None)
            pruned = kn * mask
        tensor = target.value.const_value
        array = target.view.from_kn(pruned, tuple(tensor.shape)).astype(tensor.dtype.numpy())
        total = float(importance.sum())
        record = {
            "node": target.node.name, "op_type": target.node.op_type, "method": method, "reduction": kn.shape[0],
            "weights": int(array.size), "zeros": int(array.size - np.count_nonzero(array)),
            "kept_importance": float(importance[mask].sum()) / total if total else 1.0,
            "error": _relative_error(kn, pruned, statistic.grams) if statistic is not None and statistic.grams else None,
        }
        return Pruned(np.ascontiguousarray(array), record)

    def _sparsegpt(self, target: Target, kn: np.ndarray, grams: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """SparseGPT per group of output columns (one for a MatMul), each with its own E[x xᵀ]."""
        width = kn.shape[1] // len(grams)
        nm = self.nm
        lazy = self.block if nm is None else max(nm[1], self.block // nm[1] * nm[1])
        pruned, mask = np.zeros(kn.shape), np.zeros(kn.shape, dtype=bool)
        for g, gram in enumerate(grams):
            key = (target.key, g)
            if key not in self._prepared:  # q, k and v projections share their input's factorization
                self._prepared[key] = prepare(gram, self.damp, act_order=False)
            columns = slice(g * width, (g + 1) * width)
            pruned[:, columns], mask[:, columns] = sparsegpt(kn[:, columns], self._prepared[key], nm, self.sparsity, lazy)
        return pruned, mask

    # ----- search and emitting --------------------------------------------------------------------------
    def _search(self, model: ir.Model, ctx: PassContext, targets: list[Target], samples: list[dict]) -> dict[str, str]:
        from onnxpress.irpasses.quant import sensitivity

        metric, threshold, text = sensitivity.resolve_metric(self.fidelity, self.metric)
        result = sensitivity.search(
            model, ctx, [(t.node.name, t.node.op_type) for t in targets],
            lambda clone, levels: self._emit(clone, dict(levels)) and None,
            samples, metric, threshold, reduced=False, sizes={t.node.name: t.value.const_value.size for t in targets},
        )
        self._info["sensitivity"] = [dataclasses.asdict(r) for r in result.table]
        self._info["fidelity"] = {"target": text, "reached": result.fidelity, "met": result.met, "evaluations": result.evaluations}
        self._info["dense"] = {name: "sensitive: kept dense" for name, level in result.levels.items() if level != FULL}
        if not result.met:
            ctx.logger.warning("prune: fidelity target %s not reached even with every layer dense", text)
        return result.levels

    def _emit(self, model: ir.Model, levels: dict[str, str] | None) -> list[Pruned]:
        """Give every layer of ``model`` (the pass's model or a search trial's clone, which shares its tensors)
        its pruned weight, unless ``levels`` keeps it dense."""
        emitted = []
        for target in self._targets(model)[0]:
            pruned = self._pruned.get(id(target.value.const_value))
            if pruned is None or (levels is not None and levels.get(target.node.name or "", FLOAT) != FULL):
                continue
            target.value.const_value = ir.tensor(pruned.array, name=target.value.name)
            emitted.append(pruned)
        return emitted


def _stages(model: ir.Model, targets: list[Target]) -> list[list[Target]]:
    """``targets`` in topological stages (``analyses.stages.layer_stages``)."""
    from onnxpress.irpasses.analyses.stages import layer_stages

    return [[targets[i] for i in stage] for stage in layer_stages(model, [t.node for t in targets])]


def _statistic(accumulators: list[Any]) -> Statistic | None:
    """The per-group statistic, None when the input was never seen (an If branch no sample took)."""
    if any(isinstance(a, GramMatrix) and a.empty for a in accumulators) or any(
            isinstance(a, MeanSquare) and a.total is None for a in accumulators):
        return None
    if isinstance(accumulators[0], GramMatrix):
        grams = [a.hessian() for a in accumulators]
        return Statistic([np.diag(h).astype(np.float64) for h in grams], grams)
    return Statistic([a.value for a in accumulators])


def _relative_error(weight: np.ndarray, pruned: np.ndarray, grams: list[np.ndarray]) -> float:
    """||x (W - W_pruned)||² / ||x W||² on the calibration data: tr(Δᵀ H Δ) / tr(Wᵀ H W), per group."""
    width = weight.shape[1] // len(grams)
    error = total = 0.0
    for g, gram in enumerate(grams):
        h = gram.astype(np.float64)
        w = weight[:, g * width : (g + 1) * width].astype(np.float64)
        delta = w - pruned[:, g * width : (g + 1) * width]
        error += float(np.sum(delta * (h @ delta)))
        total += float(np.sum(w * (h @ w)))
    return error / total if total else 0.0
