"""fuse-hardswish: x * Clip(x + 3, 0, 6) / 6 spelled out -> HardSwish (opset >= 14) or x * HardSigmoid(x).

onnxscript's HardSwish rules do not look at the model's opset; HardSwish only exists from opset 14, so older
models (paddle2onnx writes opset 11-12) get HardSigmoid(alpha=1/6, beta=0.5), which exists since opset 6.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass, opset
from onnxscript.rewriter import RewriteRule
from onnxscript.rewriter.rules.common._fuse_hardswish import (
    HardSigmoidFusion,
    HardSwishFusion,
    HardSwishFusionFromHardSigmoid,
)


class HardSwishAsHardSigmoidMul(HardSwishFusion):
    """Below opset 14: x * Clip(x + 3, 0, 6) / 6 -> x * HardSigmoid(x) (4 nodes -> 2)."""

    def rewrite(self, op, x, clip_min, clip_max, bias, divisor):
        return op.Mul(x, op.HardSigmoid(x, alpha=1.0 / 6.0, beta=0.5))


@dataclasses.dataclass
class FuseHardSwish(RuleSetPass):
    """Fuse spelled-out HardSwish/HardSigmoid into single ops the model's opset has."""

    name = "fuse-hardswish"
    commute = True

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        if opset(model) >= 14:
            return [HardSwishFusion().rule(), HardSigmoidFusion().rule(), HardSwishFusionFromHardSigmoid().rule()]
        return [HardSwishAsHardSigmoidMul().rule(), HardSigmoidFusion().rule()]
