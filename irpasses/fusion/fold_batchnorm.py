"""fold-batchnorm: BatchNormalization after Conv, ConvTranspose or Gemm folded into its weights and bias."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass, rules_of
from onnxscript.rewriter import RewriteRule
from onnxscript.rewriter.rules.common import _fuse_batchnorm


@dataclasses.dataclass
class FoldBatchNorm(RuleSetPass):
    """Fold inference BatchNormalization into the preceding Conv/ConvTranspose/Gemm."""

    name = "fold-batchnorm"

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        return rules_of(_fuse_batchnorm.rules)
