"""fuse-pad-conv: a constant-mode zero Pad before Conv becomes the Conv's pads."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass, rules_of
from onnxscript.rewriter import RewriteRule
from onnxscript.rewriter.rules.common import _fuse_pad_into_conv


@dataclasses.dataclass
class FusePadConv(RuleSetPass):
    """Merge zero Pad nodes into the pads of the following Conv."""

    name = "fuse-pad-conv"

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        return rules_of(_fuse_pad_into_conv.rules)
