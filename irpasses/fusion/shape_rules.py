"""Rewrite rules of our own for exporter shape plumbing that onnxscript 0.7's rules leave behind:

- Unsqueeze(Unsqueeze(x, a1), a2) with constant non-negative axes of any length -> one Unsqueeze
  (onnxscript merges only single-axis pairs);
- ConstantOfShape(constant shape) with a small result -> an initializer;
- And(x, all-true constant) and Or(x, all-false constant) that do not broadcast x -> x;
- Reshape of a rank-1 value to [-1] -> the value.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRule, pattern

MAX_MATERIALIZED_ELEMENTS = 1024


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def merged_unsqueeze_axes(first: list[int], second: list[int]) -> list[int]:
    """Axes of one Unsqueeze equal to Unsqueeze(Unsqueeze(x, first), second), all axes non-negative."""
    inserted = set(second)
    remaining = (p for p in range(max(first + second) + len(first) + len(second) + 1) if p not in inserted)
    positions = list(remaining)
    return sorted(inserted | {positions[i] for i in first})


class MergeUnsqueezes(pattern.RewriteRuleClassBase):
    def pattern(self, op, x, axes1, axes2):
        return op.Unsqueeze(op.Unsqueeze(x, axes1, _outputs=["inner"]), axes2)

    def check(self, context, x, axes1, axes2, inner) -> MatchResult:
        result = MatchResult()
        a1, a2 = _const(axes1), _const(axes2)
        if a1 is None or a2 is None:
            return result.fail("Unsqueeze axes are not constants")
        if (a1 < 0).any() or (a2 < 0).any():
            return result.fail("negative Unsqueeze axes need the input rank")
        if len(inner.uses()) != 1 or inner.is_graph_output():
            return result.fail("the inner Unsqueeze has other users")
        return result

    def rewrite(self, op, x, axes1, axes2, inner):
        axes = merged_unsqueeze_axes([int(a) for a in _const(axes1).reshape(-1)], [int(a) for a in _const(axes2).reshape(-1)])
        return op.Unsqueeze(x, op.initializer(ir.tensor(np.array(axes, dtype=np.int64)), (inner.name or "unsqueeze") + "_axes"))


class MaterializeConstantOfShape(pattern.RewriteRuleClassBase):
    def pattern(self, op, shape):
        return op.ConstantOfShape(shape, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, shape, out) -> MatchResult:
        result = MatchResult()
        dims = _const(shape)
        if dims is None:
            return result.fail("the shape is not a constant")
        if int(np.prod(dims)) > MAX_MATERIALIZED_ELEMENTS:
            return result.fail(f"the result would hold {int(np.prod(dims))} elements (cap {MAX_MATERIALIZED_ELEMENTS})")
        return result

    def rewrite(self, op, shape, out):
        attr = out.producer().attributes.get("value")
        fill = attr.value.numpy().reshape(-1)[0] if attr is not None else np.float32(0)
        array = np.full([int(d) for d in _const(shape).reshape(-1)], fill, dtype=np.asarray(fill).dtype)
        return op.initializer(ir.tensor(array), (out.name or "constant_of_shape") + "_value")


class _BooleanIdentity(pattern.RewriteRuleClassBase):
    op_type = "And"
    neutral = True

    def pattern(self, op, x, c):
        return getattr(op, self.op_type)(x, c)

    def check(self, context, x, c) -> MatchResult:
        result = MatchResult()
        value = _const(c)
        if value is None or not np.all(value == self.neutral):
            return result.fail(f"the other input is not an all-{self.neutral} constant")
        if x.shape is None or value.size != 1 or value.ndim > len(x.shape):
            return result.fail("the constant could broadcast the other input")
        return result

    def rewrite(self, op, x, c):
        return op.Identity(x)


class AndTrue(_BooleanIdentity):
    op_type, neutral = "And", True


class OrFalse(_BooleanIdentity):
    op_type, neutral = "Or", False


class FlattenRankOne(pattern.RewriteRuleClassBase):
    def pattern(self, op, x, shape):
        return op.Reshape(x, shape, _allow_other_attributes=True)

    def check(self, context, x, shape) -> MatchResult:
        result = MatchResult()
        target = _const(shape)
        if target is None or target.reshape(-1).tolist() != [-1]:
            return result.fail("the target shape is not the constant [-1]")
        if x.shape is None or len(x.shape) != 1:
            return result.fail("the input is not known to be rank 1")
        return result

    def rewrite(self, op, x, shape):
        return op.Identity(x)


def shape_rules() -> list[RewriteRule]:
    return [
        MergeUnsqueezes().rule(),
        MaterializeConstantOfShape().rule(),
        AndTrue().rule(),
        OrFalse().rule(),
        FlattenRankOne().rule(),
    ]
