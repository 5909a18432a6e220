"""auto-quant: static QDQ or dynamic int8, whichever suits the model, under a fidelity target.

Static QDQ gives convolutional networks integer kernels with calibrated ranges; a transformer's MatMuls at
batch 1 and short sequences are too small for the static cost model (MiniLM: every MatMul under 5M
multiply-adds per sentence), so static QDQ only shrinks its file while dynamic quantization, which measures
each activation's range at run time, makes it faster. The choice follows where the multiply-adds are, on the
first calibration sample: mostly in Conv layers -> static; mostly in MatMul/Gemm -> dynamic. TensorRT and
fp8 targets always take static QDQ (TensorRT has no dynamic quantization).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, TOPO_SORTED
from onnxpress.irpasses.quant.data import calibration_samples


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
    cost_model: Literal["rule", "measured"] = "rule"
    """Static path: qdq's cost model (which layers get integer kernels)."""
    rounding: Literal["nearest", "gptq"] = "gptq"
    """Static path: qdq's weight rounding. GPTQ's statistics ride on the calibration runs; with it every
    layer of PP-OCRv4 det meets the target fully quantized (IoU 0.986 vs 0.963 nearest), so the search stops
    after one trial instead of demoting layers (41 s -> 8 s); rec's character accuracy 0.993 -> 0.990 (cosine
    0.9965 -> 0.9971); the classifiers' results are unchanged at +0.1-0.4 s."""

    def __post_init__(self) -> None:
        from onnxpress.irpasses.quant.sensitivity import resolve_metric

        if self.fidelity:
            resolve_metric(self.fidelity, None)  # a bad target fails when the pipeline is built, not after calibration

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        from onnxpress.irpasses.quant.dynamic import DynamicQuant
        from onnxpress.irpasses.quant.qdq import QDQ

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
        chosen: Pass
        if method == "static":
            chosen = QDQ(
                fidelity=self.fidelity or "cosine>=0.995", eval_samples=self.eval_samples or 8, cost_model=self.cost_model, rounding=self.rounding
            )
        else:
            chosen = DynamicQuant(
                fidelity=self.fidelity or "cosine>=0.9994", eval_samples=self.eval_samples or 32, smooth=self.smooth, outliers=self.outliers
            )
        result = chosen.run(model, ctx)
        ctx.extra.setdefault("quantization", {})["auto"] = {"method": method, "conv_macs": macs["conv"], "matmul_macs": macs["matmul"]}
        stats = {**result.stats, "dynamic": int(method == "dynamic")}
        return PassResult(model=result.model, modified=result.modified, keeps=self.keeps if result.modified else None, stats=stats)
