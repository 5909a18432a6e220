"""Fusion and simplification passes: textual ONNX in, expected ops out, outputs checked with ORT."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxpress
import pytest
from onnxpress.irpasses.core import (
    PassContext,
    PassManager,
    build_passes,
    parse_pipeline,
)
from onnxpress.irpasses.fusion.shape_rules import merged_unsqueeze_axes
from onnxpress.tools.testing import assert_same_outputs, op_types, parse_model

RNG = np.random.default_rng(0)


def run(text: str, pipeline: str, target: str | None = None, **inputs: np.ndarray) -> ir.Model:
    """Apply ``pipeline``, check outputs against the original with ORT (rtol 1e-5, atol 1e-6), return it."""
    before = parse_model(text)
    after = parse_model(text)
    ctx = PassContext(target=target)
    PassManager(build_passes(pipeline), ctx=ctx).run(after)
    if inputs:
        assert_same_outputs(before, after, inputs, rtol=1e-5, atol=1e-6)
    return after


HARDSWISH = """
<ir_version: 8, opset_import: ["" : {opset}]>
g (float[1, 4, 3, 3] x) => (float[1, 4, 3, 3] y) {{
    three = Constant <value = float {{3.0}}> ()
    zero = Constant <value = float {{0.0}}> ()
    six = Constant <value = float {{6.0}}> ()
    a = Add(x, three)
    c = Clip(a, zero, six)
    m = Mul(x, c)
    y = Div(m, six)
}}
"""


def test_hardswish_below_opset_14_becomes_x_times_hardsigmoid() -> None:
    x = (RNG.standard_normal((1, 4, 3, 3)) * 4).astype(np.float32)
    out = run(HARDSWISH.format(opset=12), "lift-constants,fuse-hardswish,dead-code", x=x)
    assert sorted(op_types(out)) == ["HardSigmoid", "Mul"]


def test_hardswish_from_opset_14_is_one_op() -> None:
    x = (RNG.standard_normal((1, 4, 3, 3)) * 4).astype(np.float32)
    out = run(HARDSWISH.format(opset=14), "lift-constants,fuse-hardswish,dead-code", x=x)
    assert op_types(out) == ["HardSwish"]


def test_conv_then_per_channel_add_folds_into_the_bias() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 2, 5, 5] x) => (float[1, 3, 5, 5] y) {
        w = Constant <value = float[3, 2, 1, 1] {1, 2, 3, 4, 5, 6}> ()
        b = Constant <value = float[1, 3, 1, 1] {0.5, -1, 2}> ()
        c = Conv(x, w)
        y = Add(b, c)
    }
    """
    out = run(text, "lift-constants,fuse-conv-bias,dead-code", x=RNG.standard_normal((1, 2, 5, 5)).astype(np.float32))
    assert op_types(out) == ["Conv"] and len(out.graph[0].inputs) == 3


def test_add_that_broadcasts_beyond_channels_is_kept() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 2, 5, 5] x) => (float[1, 3, 5, 5] y) {
        w = Constant <value = float[3, 2, 1, 1] {1, 2, 3, 4, 5, 6}> ()
        b = Constant <value = float[1, 1, 1, 5] {1, 2, 3, 4, 5}> ()
        c = Conv(x, w)
        y = Add(c, b)
    }
    """
    ctx = PassContext(extra={"explain": []})
    model = parse_model(text)
    PassManager(build_passes("lift-constants,fuse-conv-bias"), ctx=ctx).run(model)
    assert op_types(model) == ["Conv", "Add"]
    (miss,) = [e for e in ctx.extra["explain"] if e["status"] == "near-miss"]
    assert miss["rule"] == "ConvAddBias" and "not a per-output-channel constant" in miss["reason"]


def test_batchnorm_folds_into_conv() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y) {
        w = Constant <value = float[2, 2, 1, 1] {1, 2, 3, 4}> ()
        s = Constant <value = float[2] {0.5, 2}> ()
        b = Constant <value = float[2] {0.1, -0.2}> ()
        m = Constant <value = float[2] {0.3, 0.4}> ()
        v = Constant <value = float[2] {1.5, 0.25}> ()
        c = Conv(x, w)
        y = BatchNormalization(c, s, b, m, v)
    }
    """
    out = run(text, "lift-constants,fold-batchnorm,dead-code", x=RNG.standard_normal((1, 2, 4, 4)).astype(np.float32))
    assert op_types(out) == ["Conv"]


GELU = """
<ir_version: 8, opset_import: ["" : {opset}]>
g (float[2, 8] x) => (float[2, 8] y) {{
    sqrt2 = Constant <value = float {{1.4142135}}> ()
    one = Constant <value = float {{1.0}}> ()
    half = Constant <value = float {{0.5}}> ()
    d = Div(x, sqrt2)
    e = Erf(d)
    a = Add(e, one)
    m = Mul(x, a)
    y = Mul(m, half)
}}
"""


@pytest.mark.parametrize(("opset", "target", "expected"), [(20, None, ["Gelu"]), (17, "ort", ["Gelu"]), (17, None, ["Div", "Erf", "Add", "Mul", "Mul"])])
def test_gelu_only_where_the_target_can_run_it(opset: int, target: str | None, expected: list[str]) -> None:
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    out = run(GELU.format(opset=opset), "lift-constants,fuse-gelu,dead-code", target=target, x=x)
    assert op_types(out) == expected
    if target == "ort":
        assert out.graph[0].domain == "com.microsoft"


@pytest.mark.parametrize(("first", "second", "merged"), [([0], [0], [0, 1]), ([1], [0], [0, 2]), ([1, 2], [3], [1, 2, 3]), ([0], [2, 3], [0, 2, 3]), ([2], [0, 1], [0, 1, 4])])
def test_unsqueeze_axes_merge(first: list[int], second: list[int], merged: list[int]) -> None:
    x = np.zeros((5, 6))
    assert merged_unsqueeze_axes(first, second) == merged
    assert np.expand_dims(np.expand_dims(x, first), second).shape == np.expand_dims(x, merged).shape


def test_shape_plumbing_rules() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, 7] x, float[batch, 7] z) => (int64[1, 1, 2] y, int64[2] s, bool[batch, 7] t) {
        a1 = Constant <value = int64[2] {0, 1}> ()
        a2 = Constant <value = int64[1] {0}> ()
        sx = Shape(x)
        sz = Shape(z)
        u = Unsqueeze(sx, a1)
        y = Unsqueeze(u, a2)
        s = Add(sx, sz)
        dims = Constant <value = int64[0] {}> ()
        truth = ConstantOfShape <value = bool[1] {1}> (dims)
        g = Greater(x, z)
        t = And(g, truth)
    }
    """
    x, z = RNG.standard_normal((3, 7)).astype(np.float32), RNG.standard_normal((3, 7)).astype(np.float32)
    out = run(text, "optimize", x=x, z=z)
    ops = op_types(out)
    assert ops.count("Shape") == 1  # same named shape [batch, 7]: merged
    assert ops.count("Unsqueeze") == 1 and "ConstantOfShape" not in ops and "And" not in ops


def test_placeholder_dim_names_are_not_merged() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float["?", 3] x, float["?", 3] z) => (int64[2] s) {
        sx = Shape(x)
        sz = Shape(z)
        s = Add(sx, sz)
    }
    """
    out = run(text, "shape-cse", x=np.zeros((2, 3), np.float32), z=np.zeros((5, 3), np.float32))
    assert op_types(out).count("Shape") == 2


def test_optimize_pipeline_is_a_fixpoint_and_round_trips_as_text() -> None:
    (inputs, group, sort) = build_passes("optimize")
    assert (inputs.name, group.name, sort.name) == ("inputs-to-constants", "fixpoint", "topo-sort")
    assert parse_pipeline(group.spec())[0].children is not None
    model = onnxpress.load(onnxpress.tools.testing.mlp_proto())
    _, report = PassManager([group]).run(model)
    iterations = {int(r.spec.rsplit("#", 1)[1]) for r in report.records}
    assert iterations == {1, 2}  # the second round changes nothing and stops the loop
    assert not any(r.modified for r in report.records if r.spec.endswith("#2"))


def test_mish_fuses_from_opset_18_only() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : {opset}]>
    g (float[2, 8] x) => (float[2, 8] y) {{
        s = Softplus(x)
        t = Tanh(s)
        y = Mul(t, x)
    }}
    """
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    assert op_types(run(text.format(opset=18), "fuse-activations,dead-code", x=x)) == ["Mish"]
    assert op_types(run(text.format(opset=17), "fuse-activations,dead-code", x=x)) == ["Softplus", "Tanh", "Mul"]


def test_tanh_gelu_at_opset_20() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 20]>
    g (float[2, 8] x) => (float[2, 8] y) {
        three = Constant <value = float {3.0}> ()
        c = Constant <value = float {0.044715}> ()
        k = Constant <value = float {0.7978845608}> ()
        one = Constant <value = float {1.0}> ()
        half = Constant <value = float {0.5}> ()
        p = Pow(x, three)
        t2 = Mul(c, p)
        t3 = Add(x, t2)
        t4 = Mul(k, t3)
        t5 = Tanh(t4)
        t6 = Add(t5, one)
        t7 = Mul(half, t6)
        y = Mul(x, t7)
    }
    """
    out = run(text, "lift-constants,fuse-gelu,dead-code", x=RNG.standard_normal((2, 8)).astype(np.float32))
    assert op_types(out) == ["Gelu"] and out.graph[0].attributes["approximate"].value == "tanh"


def test_ir3_initializer_inputs_become_constants_so_batchnorm_folds() -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(RNG.standard_normal((3, 2, 1, 1)).astype(np.float32), "w")
    bn = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (("s", RNG.random(3) + 0.5), ("b", RNG.random(3)), ("m", RNG.random(3)), ("v", RNG.random(3) + 0.5))]
    inits = [w, *bn]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])],
        "ir3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])] + [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    proto.ir_version = 3
    out, report = onnxpress.optimize(proto, "optimize", samples=[{"x": RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)}])
    assert [n.op_type for n in out.graph.node] == ["Conv"] and [i.name for i in out.graph.input] == ["x"]
    assert out.ir_version >= 4 and all(e.within for e in report.numerics)


LAYERNORM_FORMS = {
    "mean-variance": """
        mean = ReduceMean <keepdims = 1> (x, axes)
        d = Sub(x, mean)
        sq = Pow(d, two)
        var = ReduceMean <keepdims = 1> (sq, axes)
        ve = Add(var, eps)
        sd = Sqrt(ve)
        n = Div(d, sd)""",
    "moments (tf2onnx)": """
        mean = ReduceMean <keepdims = 1> (x, axes)
        xx = Mul(x, x)
        ex2 = ReduceMean <keepdims = 1> (xx, axes)
        m2 = Mul(mean, mean)
        var = Sub(ex2, m2)
        ve = Add(var, eps)
        sd = Sqrt(ve)
        d = Sub(x, mean)
        n = Div(d, sd)""",
}


@pytest.mark.parametrize("form", sorted(LAYERNORM_FORMS))
def test_layernorm_forms_fuse_with_bias(form: str) -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[2, 5, 16] x) => (float[2, 5, 16] y) {
        axes = Constant <value = int64[1] {-1}> ()
        two = Constant <value = float {2.0}> ()
        eps = Constant <value = float {1e-5}> ()
        gamma = Constant <value = float[16] {1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}> ()
        beta = Constant <value = float[16] {0,1,0,1,0,1,0,1,0,1,0,1,0,1,0,1}> ()
        %s
        s = Mul(n, gamma)
        y = Add(s, beta)
    }
    """ % LAYERNORM_FORMS[form]
    before = parse_model(text)
    after = parse_model(text)
    PassManager(build_passes("optimize")).run(after)
    assert op_types(after) == ["LayerNormalization"] and len(after.graph[0].inputs) == 3
    x = (RNG.standard_normal((2, 5, 16)) * 3 + 1).astype(np.float32)
    assert_same_outputs(before, after, {"x": x}, rtol=1e-4, atol=1e-5)


AFFINE_BLOCKS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 3, 6, 6] x) => (float[1, 4, 6, 6] y) {
    w1 = Constant <value = float[5, 3, 3, 3] {%s}> ()
    b1 = Constant <value = float[5] {0.1, -0.2, 0.3, 0.0, 0.5}> ()
    s = Constant <value = float[1] {0.9}> ()
    t = Constant <value = float[1] {-0.25}> ()
    w2 = Constant <value = float[4, 5, 1, 1] {%s}> ()
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    m1 = Mul(c1, s)
    a1 = Add(m1, t)
    h = HardSwish(a1)
    m2 = Mul(h, s)
    a2 = Add(m2, t)
    y = Conv(a2, w2)
}
"""


def test_affine_blocks_around_convs_fold_into_their_weights() -> None:
    w1 = ", ".join(f"{v:.4f}" for v in RNG.standard_normal(135))
    w2 = ", ".join(f"{v:.4f}" for v in RNG.standard_normal(20))
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    out = run(AFFINE_BLOCKS % (w1, w2), "lift-constants,fuse-conv-affine,fuse-conv-bias,dead-code", x=x)
    assert op_types(out) == ["Conv", "HardSwish", "Conv"]


def test_affine_before_a_padded_conv_stays() -> None:
    text = AFFINE_BLOCKS.replace("y = Conv(a2, w2)", "y = Conv <pads = [1, 1, 1, 1]> (a2, w3)").replace(
        "float[4, 5, 1, 1]", "float[4, 5, 1, 1]"
    )
    text = text.replace("    c1 = Conv", "    w3 = Constant <value = float[4, 5, 3, 3] {%s}> ()\n    c1 = Conv")
    w1 = ", ".join(f"{v:.4f}" for v in RNG.standard_normal(135))
    w2 = ", ".join(f"{v:.4f}" for v in RNG.standard_normal(20))
    w3 = ", ".join(f"{v:.4f}" for v in RNG.standard_normal(180))
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    out = run(text % (w1, w2, w3), "lift-constants,fuse-conv-affine,fuse-conv-bias,dead-code", x=x)
    assert op_types(out) == ["Conv", "HardSwish", "Mul", "Add", "Conv"]


def test_rules_are_dropped_only_for_ops_every_match_needs() -> None:
    """A rule is skipped when the model lacks an op on its pattern's plain path from the root; ops inside
    OrValue alternatives are not required (LayerNorm's square may be Mul or Pow, its division Div or
    Mul(Reciprocal))."""
    from onnxpress.irpasses.fusion.fuse_layernorm import LayerNormFromMoments
    from onnxpress.irpasses.fusion.rewrite import applicable, required_ops

    assert required_ops(LayerNormFromMoments.rule()) == {"Mul"}
    (fuse_matmul_add,) = build_passes("fuse-matmul-add")
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 3] x, float[2, 3] z) => (float[2, 3] y) {
        y = Add(x, z)
    }
    """
    model = parse_model(text)
    rules = fuse_matmul_add.rules(model, None)
    assert {frozenset(required_ops(r)) for r in rules} >= {frozenset({"MatMul", "Add"})}
    assert applicable(rules, model) == []  # Add alone: every MatMul+Add rule is skipped
