"""simplify: onnxscript's algebraic and no-op rules (x+0, x*1, Cast of same type, Reshape/Expand/Transpose
that change nothing, Transpose pairs, Unsqueeze pairs, inference Dropout, Min/Max to Clip, Relu/Clip chains,
slices that take everything, Expand before a broadcasting binary op)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass, rules_of
from onnxpress.irpasses.fusion.shape_rules import shape_rules
from onnxscript.rewriter import RewriteRule
from onnxscript.rewriter.rules.common import (
    _basic_rules,
    _broadcast_to_matmul,
    _cast_constant_of_shape,
    _collapse_slices,
    _fuse_relus_clips,
    _materialize_reshape_shape,
    _min_max_to_clip,
    _no_op,
    _redundant_scatter_nd,
    _remove_expand_before_binary_op,
    _remove_optional_bias,
)


@dataclasses.dataclass
class Simplify(RuleSetPass):
    """Remove no-op and redundant nodes with onnxscript's algebraic rewrite rules."""

    name = "simplify"

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        return rules_of(
            _no_op.rules,
            _broadcast_to_matmul.rules,
            _cast_constant_of_shape.rules,
            _collapse_slices.rules,
            _materialize_reshape_shape.rules,
            _min_max_to_clip.rules,
            _fuse_relus_clips.rules,
            _basic_rules.basic_optimization_rules(),
            _redundant_scatter_nd.rules,
            _remove_optional_bias.rules,
            _remove_expand_before_binary_op.expand_before_binary_op_rules,
            shape_rules(),
        )
