"""fuse-activations: activations spelled out -> single ops where the model's opset has them.

- Mish: x * Tanh(Softplus(x)) -> Mish (opset >= 18)
- SiLU / Swish: x * Sigmoid(x) -> Swish (opset >= 24)
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass, opset
from onnxscript.rewriter import RewriteRule


def _mish_pattern(op, x):
    return x * op.Tanh(op.Softplus(x))


def _mish(op, x):
    return op.Mish(x)


def _silu_pattern(op, x):
    return x * op.Sigmoid(x)


def _swish(op, x):
    return op.Swish(x)


@dataclasses.dataclass
class FuseActivations(RuleSetPass):
    """Fuse Mish (opset 18+) and SiLU/Swish (opset 24+) written out in primitive ops."""

    name = "fuse-activations"
    commute = True

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        rules = []
        if opset(model) >= 18:
            rules.append(RewriteRule(_mish_pattern, _mish))
        if opset(model) >= 24:
            rules.append(RewriteRule(_silu_pattern, _swish))
        return rules
