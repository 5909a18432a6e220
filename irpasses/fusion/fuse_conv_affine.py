"""fuse-conv-affine: per-channel scale/shift constants next to a Conv folded into its weights and bias.

PP-LCNetV3 (PaddleOCR's backbones) wraps activations in "learnable affine blocks", y = s * x + t with scalar
s and t: 38 of PP-OCRv4 det's Mul/Add pairs on full-resolution activations. Two exact folds:

- after a Conv: ``Mul(Conv(x, W, b), s)`` -> ``Conv(x, W * s, b * s)`` (s per output channel or scalar); the
  following ``Add`` then folds into the bias through fuse-conv-bias;
- before an unpadded Conv: ``Conv(Add(Mul(y, s), t), W, b)`` -> ``Conv(y, W * s, b + sum(W * t))`` for scalar
  s, t (any group) or per-input-channel s, t (group 1). With padding the border would see 0 instead of t, so
  padded Convs are left alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.fuse_conv_bias import _per_channel
from onnxpress.irpasses.fusion.rewrite import RuleSetPass
from onnxscript.rewriter import MatchResult, RewriteRule, pattern


def _bias(conv: ir.Node) -> ir.Value | None:
    return conv.inputs[2] if len(conv.inputs) > 2 else None


def _unpadded(conv: ir.Node) -> bool:
    pads = conv.attributes.get("pads")
    auto_pad = conv.attributes.get("auto_pad")
    if auto_pad is not None and auto_pad.as_string() not in ("NOTSET", "VALID"):
        return False
    return pads is None or not any(pads.as_ints())


class ConvMulScale(pattern.RewriteRuleClassBase):
    """Mul(Conv(x, W[, b]), s) -> Conv(x, W * s, b * s)."""

    def pattern(self, op, x, w, scale):
        return op.Mul(op.Conv(x, w, _allow_other_attributes=True, _allow_other_inputs=True, _outputs=["conv_out"]), scale)

    def check(self, context, x, w, scale, conv_out, **_) -> MatchResult:
        result = MatchResult()
        b = _bias(conv_out.producer())
        if w.const_value is None or (b is not None and b.const_value is None):
            return result.fail("Conv weight or bias is not a constant")
        if len(conv_out.uses()) != 1 or conv_out.is_graph_output():
            return result.fail("the Conv output is used elsewhere too")
        if _per_channel(scale, w.const_value.shape[0], len(w.const_value.shape)) is None:
            return result.fail(f"the scale is not a per-output-channel constant (shape {scale.shape})")
        return result

    def rewrite(self, op, x, w, scale, conv_out):
        b = _bias(conv_out.producer())
        weight = w.const_value.numpy()
        s = _per_channel(scale, weight.shape[0], weight.ndim).astype(weight.dtype)
        name = conv_out.producer().name or "conv"
        new_w = op.initializer(ir.tensor(weight * s.reshape(-1, *([1] * (weight.ndim - 1)))), f"{name}_w_scaled")
        inputs = [x, new_w]
        if b is not None:
            inputs.append(op.initializer(ir.tensor((b.const_value.numpy() * s).astype(weight.dtype)), f"{name}_b_scaled"))
        return op.Conv(*inputs, **conv_out.producer().attributes)


class AffineIntoConv(pattern.RewriteRuleClassBase):
    """Conv(Add(Mul(y, s), t), W[, b]) -> Conv(y, W * s, b + sum(W * t)) for an unpadded Conv."""

    def pattern(self, op, y, s, t, w):
        shifted = op.Add(op.Mul(y, s, _outputs=["scaled"]), t, _outputs=["shifted"])
        return op.Conv(shifted, w, _allow_other_attributes=True, _allow_other_inputs=True, _outputs=["conv_out"])

    def _affine(self, s: ir.Value, t: ir.Value, w: ir.Value, group: int) -> tuple[np.ndarray, np.ndarray] | None:
        weight = w.const_value
        channels = weight.shape[1] * group
        scale = _per_channel(s, channels, len(weight.shape))
        shift = _per_channel(t, channels, len(weight.shape))
        if scale is None or shift is None:
            return None
        uniform = np.all(scale == scale[0]) and np.all(shift == shift[0])
        if group != 1 and not uniform:
            return None
        return scale, shift

    def check(self, context, y, s, t, w, scaled, shifted, conv_out, **_) -> MatchResult:
        result = MatchResult()
        conv = conv_out.producer()
        b = _bias(conv)
        if w.const_value is None or (b is not None and b.const_value is None):
            return result.fail("Conv weight or bias is not a constant")
        if not _unpadded(conv):
            return result.fail("the Conv pads its input: the border would see 0 instead of the shift")
        if len(scaled.uses()) != 1 or len(shifted.uses()) != 1 or shifted.is_graph_output() or scaled.is_graph_output():
            return result.fail("the scaled value is used elsewhere too")
        group = conv.attributes.get_int("group", 1)
        if self._affine(s, t, w, group) is None:
            return result.fail("scale/shift are not scalars or per-input-channel constants (group 1)")
        return result

    def rewrite(self, op, y, s, t, w, scaled, shifted, conv_out):
        conv = conv_out.producer()
        b = _bias(conv)
        group = conv.attributes.get_int("group", 1)
        scale, shift = self._affine(s, t, w, group)
        weight = w.const_value.numpy()
        per_in = weight.shape[1]
        scale_w = scale[:per_in].reshape(1, per_in, *([1] * (weight.ndim - 2))).astype(weight.dtype)
        shift_w = shift[:per_in].reshape(1, per_in, *([1] * (weight.ndim - 2))).astype(weight.dtype)
        bias = b.const_value.numpy() if b is not None else np.zeros(weight.shape[0], dtype=weight.dtype)
        new_bias = bias + (weight * shift_w).sum(axis=tuple(range(1, weight.ndim)))
        name = conv.name or "conv"
        new_w = op.initializer(ir.tensor(weight * scale_w), f"{name}_w_affine")
        new_b = op.initializer(ir.tensor(new_bias.astype(weight.dtype)), f"{name}_b_affine")
        return op.Conv(y, new_w, new_b, **conv.attributes)


@dataclasses.dataclass
class FuseConvAffine(RuleSetPass):
    """Fold constant per-channel scale/shift around Convs into their weights (exact; padded Convs skipped)."""

    name = "fuse-conv-affine"
    commute = True

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        return [ConvMulScale().rule(), AffineIntoConv().rule()]
