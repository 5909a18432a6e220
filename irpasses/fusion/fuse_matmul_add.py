"""fuse-matmul-add: 2-D MatMul + Add(bias) -> Gemm (with transposes folded into transA/transB)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass, opset, rules_of
from onnxscript.rewriter import RewriteRule
from onnxscript.rewriter.rules.common import _matmul_add_to_gemm


@dataclasses.dataclass
class FuseMatMulAdd(RuleSetPass):
    """Turn 2-D MatMul followed by a bias Add into Gemm."""

    name = "fuse-matmul-add"

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        if opset(model) < 7:
            return []  # Gemm before opset 7 broadcasts C only with broadcast=1, which onnxscript's rule does not write
        return rules_of(_matmul_add_to_gemm.rules)
