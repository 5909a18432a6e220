"""fuse-layernorm: LayerNorm written out -> LayerNormalization (opset >= 17).

Two spellings: the mean/variance form (ReduceMean, Sub, Pow/Mul, ReduceMean, Add eps, Sqrt, Div) through
onnxscript's rule, and the E[x^2] - E[x]^2 form tf2onnx emits through ours (the fused op is also the more
accurate of the two: it does not subtract two nearly equal means).
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass, opset
from onnxscript.rewriter import MatchResult, RewriteRule, pattern
from onnxscript.rewriter.rules.fusion._layer_norm import layer_normalization_rules


class LayerNormFromMoments(pattern.RewriteRuleClassBase):
    """(x - E[x]) / sqrt(E[x^2] - E[x]^2 + eps) * scale -> LayerNormalization(x, scale)."""

    def pattern(self, op, x, scale, epsilon):
        mean = op.ReduceMean(x, [-1], keepdims=1)
        mean_of_squares = op.ReduceMean(pattern.OrValue([op.Mul(x, x), op.Pow(x, 2)]), [-1], keepdims=1)
        variance = op.Sub(mean_of_squares, pattern.OrValue([op.Mul(mean, mean), op.Pow(mean, 2)]))
        std = op.Sqrt(op.Add(variance, epsilon))
        deviation = op.Sub(x, mean)
        normalized = pattern.OrValue([op.Div(deviation, std), op.Mul(deviation, op.Reciprocal(std))])
        return op.Mul(normalized, scale)

    def check(self, context, x, scale, epsilon, **_) -> MatchResult:
        result = MatchResult()
        if x.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE):
            return result.fail("the input is not a float type")
        eps = epsilon.const_value
        if eps is None or eps.size != 1:
            return result.fail("epsilon is not a constant scalar")
        self._epsilon = float(eps.numpy().reshape(-1)[0])
        return result

    def rewrite(self, op, x, scale, epsilon, **_):
        return op.LayerNormalization(x, scale, axis=-1, epsilon=self._epsilon)


@dataclasses.dataclass
class FuseLayerNorm(RuleSetPass):
    """Fuse spelled-out layer normalization into LayerNormalization where the opset has it (17+)."""

    name = "fuse-layernorm"

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        if opset(model) < 17:
            return []
        return [LayerNormFromMoments().rule(), *layer_normalization_rules]
