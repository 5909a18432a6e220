"""fuse-conv-bias: Conv followed by Add of a per-output-channel constant -> that constant in the Conv's bias.

paddle2onnx and some PyTorch exports keep the bias as a separate Add ([1, C, 1, 1] or [C, 1, 1]).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass
from onnxscript.rewriter import MatchResult, RewriteRule, pattern


def _per_channel(value: ir.Value, channels: int, rank: int) -> np.ndarray | None:
    """The constant as a [channels] vector if it broadcasts only along the channel axis of a rank-`rank` output."""
    tensor = value.const_value
    if tensor is None:
        return None
    array = tensor.numpy()
    if array.ndim > rank:
        return None
    shape = (1,) * (rank - array.ndim) + array.shape
    if shape[0] != 1 or any(d != 1 for d in shape[2:]) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(array.reshape(-1), (channels,)).astype(array.dtype)


class _ConvAddBase(pattern.RewriteRuleClassBase):
    def check(self, context, x, w, add_const, conv_out, b=None, **_) -> MatchResult:
        result = MatchResult()
        weight = w.const_value
        if weight is None:
            return result.fail("Conv weight is not a constant")
        if len(conv_out.uses()) != 1 or conv_out.is_graph_output():
            return result.fail("the Conv output is used elsewhere too")
        if _per_channel(add_const, weight.shape[0], len(weight.shape)) is None:
            return result.fail(f"the added value is not a per-output-channel constant (shape {add_const.shape})")
        if b is not None and b.const_value is None:
            return result.fail("the Conv bias is not a constant")
        return result

    def _fused(self, op, x, w, add_const, conv_out, b=None):
        weight = w.const_value
        extra = _per_channel(add_const, weight.shape[0], len(weight.shape))
        bias = extra if b is None else b.const_value.numpy() + extra
        name = (conv_out.producer().name or "conv") + "_bias_fused"
        bias_value = op.initializer(ir.tensor(bias.astype(weight.numpy().dtype)), name)
        return op.Conv(x, w, bias_value, **conv_out.producer().attributes)


class ConvAddBias(_ConvAddBase):
    def pattern(self, op, x, w, add_const):
        return op.Add(op.Conv(x, w, _allow_other_attributes=True, _outputs=["conv_out"]), add_const)

    def rewrite(self, op, x, w, add_const, conv_out):
        return self._fused(op, x, w, add_const, conv_out)


class ConvBiasAddBias(_ConvAddBase):
    def pattern(self, op, x, w, b, add_const):
        return op.Add(op.Conv(x, w, b, _allow_other_attributes=True, _outputs=["conv_out"]), add_const)

    def rewrite(self, op, x, w, b, add_const, conv_out):
        return self._fused(op, x, w, add_const, conv_out, b)


@dataclasses.dataclass
class FuseConvBias(RuleSetPass):
    """Fold an Add of a per-channel constant after Conv into the Conv bias."""

    name = "fuse-conv-bias"
    commute = True

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        return [ConvAddBias().rule(), ConvBiasAddBias().rule()]
