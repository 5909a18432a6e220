"""fuse-attention: scaled dot-product multi-head attention written out -> com.microsoft.MultiHeadAttention,
for targets that run contrib ops (``--target ort``).

Matches what torch's eager BERT-style export produces:

    Q = Transpose(Reshape(q, [B, S, H, D]), [0, 2, 1, 3]); K = Transpose(Reshape(k, ...), [0, 2, 3, 1]);
    V = Transpose(Reshape(v, ...), [0, 2, 1, 3]); P = Softmax(MatMul(Q, K) * scale + bias);
    out = Reshape(Transpose(MatMul(P, V), [0, 2, 1, 3]), [B, S, H*D])

and checks that the head size D is a constant, the hidden size of q is static and divisible by it, and the
scale is a scalar constant. Models at opset 23+ could use the standard Attention op instead (not written yet).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.fusion.rewrite import RuleSetPass
from onnxscript.rewriter import MatchResult, RewriteRule, pattern


def _head_size(shape: ir.Value) -> int | None:
    """The last entry of a Reshape target [B, S, H, D], read from a constant or from a Concat of pieces."""
    if shape.const_value is not None:
        dims = shape.const_value.numpy().reshape(-1)
        return int(dims[-1]) if len(dims) == 4 and dims[-1] > 0 else None
    producer = shape.producer()
    if producer is None or producer.op_type != "Concat" or len(producer.inputs) != 4:
        return None
    last = producer.inputs[-1]
    if last is None or last.const_value is None:
        return None
    value = last.const_value.numpy().reshape(-1)
    return int(value[0]) if value.size == 1 and value[0] > 0 else None


class MultiHeadAttentionFusion(pattern.RewriteRuleClassBase):
    def pattern(self, op, q, k, v, shape_q, shape_k, shape_v, scale, bias, shape_out):
        qt = op.Transpose(op.Reshape(q, shape_q, _allow_other_attributes=True), perm=[0, 2, 1, 3])
        kt = op.Transpose(op.Reshape(k, shape_k, _allow_other_attributes=True), perm=[0, 2, 3, 1])
        vt = op.Transpose(op.Reshape(v, shape_v, _allow_other_attributes=True), perm=[0, 2, 1, 3])
        scores = op.Add(op.Mul(op.MatMul(qt, kt), scale), bias)
        context = op.MatMul(op.Softmax(scores, axis=-1), vt)
        return op.Reshape(op.Transpose(context, perm=[0, 2, 1, 3]), shape_out, _allow_other_attributes=True)

    def check(self, context, q, k, v, shape_q, shape_k, shape_v, scale, bias, shape_out, **_) -> MatchResult:
        result = MatchResult()
        head = _head_size(shape_q)
        if head is None or _head_size(shape_k) != head or _head_size(shape_v) != head:
            return result.fail("the head size is not the same constant in the Q, K and V reshapes")
        hidden = q.shape[-1] if q.shape is not None and len(q.shape) == 3 else None
        if not isinstance(hidden, int) or hidden % head:
            return result.fail(f"the hidden size of Q ({hidden}) is not static or not a multiple of the head size {head}")
        if any(x.shape is None or x.shape[-1] != hidden for x in (k, v)):
            return result.fail("K and V do not have Q's hidden size")
        if scale.const_value is None or scale.const_value.size != 1:
            return result.fail("the attention scale is not a scalar constant")
        self._heads = hidden // head
        return result

    def rewrite(self, op, q, k, v, shape_q, shape_k, shape_v, scale, bias, shape_out):
        scale_value = float(np.asarray(scale.const_value.numpy()).reshape(-1)[0])
        return op.MultiHeadAttention(
            q, k, v, None, None, bias, num_heads=self._heads, scale=scale_value, _domain="com.microsoft"
        )


@dataclasses.dataclass
class FuseAttention(RuleSetPass):
    """Fuse BERT-style multi-head attention into com.microsoft.MultiHeadAttention (ORT targets only)."""

    name = "fuse-attention"
    commute = True

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:
        if ctx.target != "ort":
            return []
        if "com.microsoft" not in model.opset_imports:
            model.opset_imports["com.microsoft"] = 1
        return [MultiHeadAttentionFusion().rule()]
