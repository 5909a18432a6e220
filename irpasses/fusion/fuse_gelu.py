"""fuse-gelu: GELU written out -> one op. Erf form 0.5 * x * (1 + Erf(x / sqrt 2)): Gelu at opset >= 20,
com.microsoft.Gelu for ``--target ort``. Tanh form 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3))):
Gelu(approximate="tanh") at opset >= 20, com.microsoft.FastGelu for ``--target ort``. Otherwise left alone."""

from __future__ import annotations

import dataclasses
import math

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass, opset
from onnxscript.rewriter import RewriteRule
from onnxscript.rewriter.ort_fusions import erfgelu
from onnxscript.rewriter.ort_fusions.gelu import GeluTanhFusion


def _erf_gelu_pattern_3(op, x):
    return (x * 0.5) * (op.Erf(x / math.sqrt(2)) + 1.0)


def _standard_gelu(op, x):
    return op.Gelu(x)


class _TanhGeluStandard(GeluTanhFusion):
    def rewrite(self, op, x):
        return op.Gelu(x, approximate="tanh")


@dataclasses.dataclass
class FuseGelu(RuleSetPass):
    """Fuse GELU (erf and tanh forms) into one op (standard Gelu at opset 20+, com.microsoft for ORT targets)."""

    name = "fuse-gelu"
    commute = True

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        patterns = (erfgelu.erf_gelu_pattern_1, erfgelu.erf_gelu_pattern_2, _erf_gelu_pattern_3)
        if opset(model) >= 20:
            return [RewriteRule(p, _standard_gelu) for p in patterns] + [_TanhGeluStandard().rule()]
        if ctx.target == "ort":
            if "com.microsoft" not in model.opset_imports:
                model.opset_imports["com.microsoft"] = 1
            return [RewriteRule(p, erfgelu.gelu) for p in patterns] + [GeluTanhFusion().rule()]
        return []
