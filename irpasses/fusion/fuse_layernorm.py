"""fuse-layernorm: LayerNorm written out (ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add) -> LayerNormalization (opset >= 17)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxscript.rewriter import RewriteRule
from onnxscript.rewriter.rules.fusion._layer_norm import layer_normalization_rules

from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass, opset


@dataclasses.dataclass
class FuseLayerNorm(RuleSetPass):
    """Fuse spelled-out layer normalization into LayerNormalization where the opset has it (17+)."""

    name = "fuse-layernorm"

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        return list(layer_normalization_rules) if opset(model) >= 17 else []
