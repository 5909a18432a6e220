"""auto-quant: static QDQ or dynamic int8, whichever suits the model, under a fidelity target.

Static QDQ gives convolutional networks integer kernels with calibrated ranges; a transformer's MatMuls at
batch 1 and short sequences are too small for the static cost model (MiniLM: every MatMul under 5M
multiply-adds per sentence), so static QDQ only shrinks its file while dynamic quantization, which measures
each activation's range at run time, makes it faster. The choice follows where the multiply-adds are, on the
first calibration sample: mostly in Conv layers -> static; mostly in MatMul/Gemm -> dynamic. TensorRT and
fp8 targets always take static QDQ (TensorRT has no dynamic quantization).

For onnxruntime targets the result is then timed against the float model on this machine (``latency_check``):
a quantized model that is not faster falls back to int8 weights with float activations, folded to float when
the session loads (float speed, a quarter of the bytes), and the report says so. On an AVX2 EPYC, auto had
made MiniLM 1.68x and a YOLO detector 1.09x float while reporting its goal met (issue 13).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, TOPO_SORTED
from onnxpress.irpasses.core.snapshot import snapshot
from onnxpress.irpasses.quant.data import calibration_samples

NOT_FASTER = 1.0
RETRY_ABOVE = 0.75
"""cost_model=auto: a rule-based result slower than this share of float's time makes auto try the measured one."""
CLEARLY_FASTER = 0.93
"""The measured result replaces the rule's only below this share of its time (under ~7 % is noise here)."""
"""The quantized model must take less than this share of the float model's time, or auto falls back."""
UNREACHABLE_MACS = 1 << 62
"""qdq's min_macs that makes every layer "small": int8 weights folded at load, float activations."""


def multiply_adds(model: ir.Model, ctx: PassContext, samples: Any) -> dict[str, float]:
    """Multiply-adds on the first sample of the Conv and the MatMul/Gemm layers with constant weights."""
    from onnxpress.irpasses.quant.qdq import elements, first_sample_shapes, layer_cost

    layers = [
        n for n in model.graph
        if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.inputs) > 1 and n.inputs[1] is not None
        and n.inputs[1].const_value is not None and n.inputs[0] is not None and n.inputs[0].name
    ]
    shapes = first_sample_shapes(model, ctx, samples, list(dict.fromkeys(n.inputs[0].name for n in layers)))
    totals = {"conv": 0.0, "matmul": 0.0}
    for node in layers:
        cost = layer_cost(node, elements(shapes.get(node.inputs[0].name, ())))
        if cost is not None:
            totals["conv" if node.op_type == "Conv" else "matmul"] += cost[0]
    return totals


@dataclasses.dataclass
class AutoQuant(Pass):
    """Static QDQ (Conv-heavy models, TensorRT) or dynamic int8 (MatMul-heavy models), under a fidelity target."""

    name = "auto-quant"
    lossy = True
    needs = frozenset({CONSTANTS_LIFTED})
    keeps = frozenset({TOPO_SORTED, CONSTANTS_LIFTED})
    fidelity: str = ""
    """The target; empty: cosine>=0.995 for static, cosine>=0.9994 for dynamic. Static: where det's mask IoU
    reached 0.99. Dynamic: MiniLM's nearest-neighbour retrieval over 320 held-out sentences, 5 of which have
    their two nearest neighbours within 0.2 %, is 0.97-0.99 at any held-out mean cosine near 0.9995 (which
    near-ties flip changes with the graph form); 0.9993 / 0.9994 / 0.9995 measured 0.54x / 0.56x / 0.70x
    float latency. Chosen on that benchmark; a task metric (Python ``metric=``) is the better target."""
    eval_samples: int = 0
    """Samples that judge fidelity; 0: 8 for static, 32 for dynamic (a transformer's worst sentence varies
    more than a CNN's worst page)."""
    smooth: float = 0.5
    """Dynamic path: SmoothQuant alpha for the dynamically quantized layers (see dynamic-quant; 0.5 is the
    SmoothQuant paper's default)."""
    outliers: float = 6.0
    """Dynamic path: outlier channels (see dynamic-quant) above this many times the median channel."""
    method: Literal["auto", "static", "dynamic"] = "auto"
    cost_model: Literal["rule", "measured", "auto"] = "auto"
    """Static path: qdq's cost model (which layers get integer kernels). auto: the rule, and when its result is
    not at most ``RETRY_ABOVE`` of float's time here, also the measured one, keeping the faster result (both
    went through the fidelity search). The rule's 50M multiply-adds floor was fitted on PP-OCRv4 det/rec and left
    an unseen YOLOv8n at 320x320 (no layer that large) at 0.91x float; measured: 0.60x, anchor agreement 0.9965."""
    latency_check: bool = True
    """onnxruntime targets: time the result against the float model here (ORT_ENABLE_ALL, one thread, the first
    calibration sample) and fall back to folded int8 weights when it is not faster (see the module doc)."""
    rounding: Literal["nearest", "gptq"] = "gptq"
    """Static path: qdq's weight rounding. GPTQ's statistics ride on the calibration runs; with it every
    layer of PP-OCRv4 det meets the target fully quantized (IoU 0.986 vs 0.963 nearest), so the search stops
    after one trial instead of demoting layers (41 s -> 8 s); rec's character accuracy 0.993 -> 0.990 (cosine
    0.9965 -> 0.9971); the classifiers' results are unchanged at +0.1-0.4 s."""

    timer: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """Python API (tests): {label: model}, sample -> {label: ms}; default ``layer_timing.interleaved_ms``."""

    def __post_init__(self) -> None:
        from onnxpress.irpasses.quant.sensitivity import resolve_metric

        if self.timer is None:
            from onnxpress.irpasses.quant.layer_timing import interleaved_ms

            self.timer = interleaved_ms
        if self.fidelity:
            resolve_metric(self.fidelity, None)  # a bad target fails when the pipeline is built, not after calibration

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        method, macs = self.method, {"conv": 0.0, "matmul": 0.0}
        if method == "auto":
            if ctx.target not in (None, "ort"):
                method = "static"
            else:
                macs = multiply_adds(model, ctx, calibration_samples(ctx, model, False, self.name))
                method = "dynamic" if macs["matmul"] > macs["conv"] else "static"
        ctx.logger.info(
            "auto-quant: %s (multiply-adds per sample: %.0fM in Conv, %.0fM in MatMul/Gemm)", method, macs["conv"] / 1e6, macs["matmul"] / 1e6
        )
        checked = self.latency_check and ctx.target in (None, "ort")
        original = snapshot(model) if checked else None
        first = "measured" if self.cost_model == "measured" else "rule"
        result = self._quantizer(method, first).run(model, ctx)
        info = ctx.extra.setdefault("quantization", {})
        record = {"method": method, "conv_macs": macs["conv"], "matmul_macs": macs["matmul"]}
        info["auto"] = record
        stats = {**result.stats, "dynamic": int(method == "dynamic")}
        if original is not None and result.modified:
            sample = dict(next(iter(calibration_samples(ctx, original, False, self.name))))
            timed = self.timer({"float": original, "quantized": model}, sample)
            if method == "static" and self.cost_model == "auto" and timed["quantized"] > RETRY_ABOVE * timed["float"]:
                timed = self._try_measured(model, original, sample, timed, ctx)
            record = info["auto"]  # (restored or replaced by the retry)
            record["latency_ms"] = {"float": timed["float"], "quantized": timed["quantized"]}
            record["latency_measured"] = "this machine, onnxruntime ORT_ENABLE_ALL, 1 thread, the first calibration sample"
            stats["weights_only_fallback"] = int(self._fall_back_if_slower(model, original, method, ctx, timed, record))
        return PassResult(model=result.model, modified=result.modified, keeps=self.keeps if result.modified else None, stats=stats)

    def _quantizer(self, method: str, cost_model: str) -> Pass:
        from onnxpress.irpasses.quant.dynamic import DynamicQuant
        from onnxpress.irpasses.quant.qdq import QDQ

        if method == "static":
            return QDQ(
                fidelity=self.fidelity or "cosine>=0.995", eval_samples=self.eval_samples or 8,
                cost_model=cost_model,  # type: ignore[arg-type]
                rounding=self.rounding,
            )
        return DynamicQuant(
            fidelity=self.fidelity or "cosine>=0.9994", eval_samples=self.eval_samples or 32, smooth=self.smooth, outliers=self.outliers
        )

    def _try_measured(
        self, model: ir.Model, original: ir.Model, sample: dict[str, Any], timed: dict[str, float], ctx: PassContext
    ) -> dict[str, float]:
        """Quantize ``original`` again under the measured cost model; keep it (in ``model``, in place) when it met
        the fidelity target and is clearly faster than the rule's result. Returns the kept result's timing."""
        info = ctx.extra["quantization"]
        kept = dict(info)
        rule_ratio = timed["quantized"] / timed["float"]
        ctx.logger.info("auto-quant: the rule's int8 model runs %.2fx float here; trying the measured cost model", rule_ratio)
        alternative = snapshot(original)
        self._quantizer("static", "measured").run(alternative, ctx)
        again = self.timer({"float": original, "quantized": alternative}, sample)
        met = info.get("fidelity", {}).get("met", True)
        tried = {"rule": rule_ratio, "measured": again["quantized"] / again["float"]}
        if met and tried["measured"] < CLEARLY_FASTER * rule_ratio:
            model.graph = alternative.graph  # in place: the pass manager holds this model object
            info["auto"] = {**kept["auto"], "cost_model": "measured", "latency_ratio_tried": tried}
            return again
        info.clear()
        info.update(kept)
        info["auto"] = {**kept["auto"], "cost_model": "rule", "latency_ratio_tried": tried}
        return timed

    def _fall_back_if_slower(
        self, model: ir.Model, original: ir.Model, method: str, ctx: PassContext, timed: dict[str, float], record: dict[str, Any]
    ) -> bool:
        """When ``model`` is not faster than ``original`` here, replace its graph by the original's with int8
        weights and float activations. Returns whether it fell back."""
        from onnxpress.irpasses.quant.dynamic import DynamicQuant
        from onnxpress.irpasses.quant.qdq import QDQ

        if timed["quantized"] < timed["float"] * NOT_FASTER:
            return False
        ctx.logger.warning(
            "auto-quant: the %s int8 model runs %.2fx the float model's time here; keeping int8 weights with float activations instead",
            method, timed["quantized"] / timed["float"],
        )
        fallback = snapshot(original)
        info = ctx.extra.setdefault("quantization", {})
        why = "auto: the int8 model was not faster here; int8 weights, float activations"
        if method == "static":
            QDQ(min_macs=UNREACHABLE_MACS, rounding=self.rounding).run(fallback, ctx)
        else:
            dynamic = DynamicQuant()
            dynamic.weights_only(fallback, ctx)
            info["kept_float"] = dict.fromkeys((n.name for n in dynamic._layers(original)), why)
        model.graph = fallback.graph  # in place: the pass manager holds this model object
        info.setdefault("fidelity", {})["note"] = "replaced by the weights-only fallback after the search (see auto.fallback)"
        record["fallback"] = "weights only: the int8 model was not faster than float here"
        return True
