"""Static quantization of layers inside If/Loop/Scan bodies: calibrated through values passed out of the bodies."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.core.numerics import with_outputs
from onnxpress.irpasses.quant import bodies
from onnxpress.irpasses.quant.collect import collect_histograms

RNG = np.random.default_rng(11)
QDQ_EVERY_LAYER = "qdq{keep_fragile=false,min_macs=0,min_intensity=0}"


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def _conv(x: str, w: str, y: str, name: str) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w], [y], name=name, pads=[1, 1, 1, 1])


def if_model() -> onnx.ModelProto:
    """x -> If(cond) {then: Conv3x3/Relu/Conv3x3, else: Conv1x1} -> y: the whole network in the branches (silero-vad's form)."""
    then_branch = helper.make_graph(
        [_conv("x", "w1", "t1", "then_conv1"), helper.make_node("Relu", ["t1"], ["t2"], name="then_relu"), _conv("t2", "w2", "t3", "then_conv2")],
        "then", [], [helper.make_tensor_value_info("t3", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph([helper.make_node("Conv", ["x", "w3"], ["e1"], name="else_conv")], "else", [], [helper.make_tensor_value_info("e1", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch)],
        "if_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 12]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_w(8, 4, 3, 3), "w1"), numpy_helper.from_array(_w(8, 8, 3, 3), "w2"), numpy_helper.from_array(_w(8, 4, 1, 1), "w3")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def loop_model(with_if: bool = False) -> onnx.ModelProto:
    """x -> Loop 3 times {s -> Conv -> Relu -> s} -> y; with_if: the body's Conv sits in an If."""
    if with_if:
        inner = helper.make_graph([_conv("s_in", "w", "c", "loop_if_conv")], "inner", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
        other = helper.make_graph([helper.make_node("Identity", ["s_in"], ["i"])], "other", [], [helper.make_tensor_value_info("i", TensorProto.FLOAT, None)])
        compute = [helper.make_node("If", ["go"], ["c"], then_branch=inner, else_branch=other, name="loop_if")]
    else:
        compute = [_conv("s_in", "w", "c", "loop_conv")]
    body = helper.make_graph(
        [*compute, helper.make_node("Relu", ["c"], ["s_out"], name="loop_relu"), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("s_out", TensorProto.FLOAT, None)],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "", "x"], ["y"], name="loop", body=body)],
        "loop_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 10, 10])] + ([helper.make_tensor_value_info("go", TensorProto.BOOL, [])] if with_if else []),
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_w(6, 6, 3, 3) * 0.6, "w"), numpy_helper.from_array(np.array(3, np.int64), "trips")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ops_in_bodies(model: onnx.ModelProto) -> list[str]:
    found = []
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found += [n.op_type for n in attribute.g.node]
    return found


def test_expose_passes_if_and_loop_values_out() -> None:
    """Branch values come out of the If (empty when the other branch runs); a Loop body's come out stacked per
    iteration and fold back into the batch axis."""
    proto = if_model()
    model = onnxpress.load(proto)
    exposed = bodies.expose(model, ["t2", "e1"])
    assert sorted(exposed.aliases.values()) == ["e1", "t2"] and not exposed.unreachable
    session = make_session(with_outputs(exposed.model, list(exposed.aliases)))
    x = RNG.standard_normal((1, 4, 12, 12)).astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    for cond in (True, False):
        got = dict(zip(names, session.run(None, {"x": x, "cond": np.array(cond)})))
        by_original = {exposed.aliases[n]: exposed.fold(n, a) for n, a in got.items() if n in exposed.aliases}
        assert (by_original["t2"] is not None) == cond and (by_original["e1"] is None) == cond
    relu_in_then = np.maximum(make_session(_then_only(proto)).run(None, {"x": x})[0], 0)
    got = dict(zip(names, session.run(None, {"x": x, "cond": np.array(True)})))
    t2 = next(exposed.fold(n, a) for n, a in got.items() if exposed.aliases.get(n) == "t2")
    np.testing.assert_allclose(t2, relu_in_then, rtol=1e-5, atol=1e-6)
    assert model.graph.node(0).outputs.__len__() == 1  # the original is untouched

    loop = onnxpress.load(loop_model())
    exposed = bodies.expose(loop, ["c"])
    (alias,) = exposed.aliases
    assert exposed.stacked[alias] == 1
    session = make_session(with_outputs(exposed.model, list(exposed.aliases)))
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": RNG.standard_normal((1, 6, 10, 10)).astype(np.float32)})))
    assert out[alias].shape == (3, 1, 6, 10, 10) and exposed.fold(alias, out[alias]).shape == (3, 6, 10, 10)


def _then_only(model: onnx.ModelProto) -> onnx.ModelProto:
    then_branch = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")
    graph = helper.make_graph(list(then_branch.node)[:1], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 12])],
                              [helper.make_tensor_value_info("t1", TensorProto.FLOAT, None)], list(model.graph.initializer))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def test_histograms_of_branch_values_see_only_the_samples_that_took_the_branch() -> None:
    model = onnxpress.load(if_model())
    samples = [{"x": RNG.standard_normal((1, 4, 12, 12)).astype(np.float32), "cond": np.array(i % 3 == 0)} for i in range(6)]
    stats = collect_histograms(model, samples, ["t2", "e1", "x"], channel_axes={"t2": 1})
    assert stats["t2"].seen == 2 * 8 * 12 * 12 and stats["e1"].seen == 4 * 8 * 12 * 12 and stats["x"].seen == 6 * 4 * 12 * 12
    assert stats["t2"].minimum >= 0 and stats["t2"].channel_mean().shape == (8,)


@pytest.mark.parametrize("cond", [True, False])
def test_qdq_quantizes_layers_inside_if_branches(cond: bool) -> None:
    """Every Conv of both branches gets Q/DQ, onnxruntime fuses them into QLinearConv inside the branches,
    and the output stays close to float on either branch."""
    samples = {"x": RNG.standard_normal((8, 1, 4, 12, 12)).astype(np.float32), "cond": np.array([i % 2 == 0 for i in range(8)])}
    proto = if_model()
    out, report = onnxpress.optimize(proto, QDQ_EVERY_LAYER, samples=samples, verify="off")
    assert report.records[-1].stats["sites"] == 3
    inner = _ops_in_bodies(out)
    assert inner.count("QuantizeLinear") >= 3 and inner.count("Conv") == 3
    x = RNG.standard_normal((1, 4, 12, 12)).astype(np.float32)
    feed = {"x": x, "cond": np.array(cond)}
    ref = make_session(onnxpress.load(proto)).run(None, feed)[0]
    got = make_session(onnxpress.load(out)).run(None, feed)[0]
    assert _cosine(ref, got) > 0.999
    optimized = _ort_optimized(out)
    assert _ops_in_bodies(optimized).count("QLinearConv") == 3


def _ort_optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = f"{folder}/o.onnx"
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(f"{folder}/o.onnx")


def test_qdq_quantizes_a_loop_body_from_every_iteration() -> None:
    samples = {"x": RNG.standard_normal((6, 1, 6, 10, 10)).astype(np.float32)}
    proto = loop_model()
    out, report = onnxpress.optimize(proto, QDQ_EVERY_LAYER, samples=samples, verify="off")
    assert report.records[-1].stats["sites"] == 1
    assert "QuantizeLinear" in _ops_in_bodies(out)
    x = RNG.standard_normal((1, 6, 10, 10)).astype(np.float32)
    ref = make_session(onnxpress.load(proto)).run(None, {"x": x})[0]
    got = make_session(onnxpress.load(out)).run(None, {"x": x})[0]
    assert _cosine(ref, got) > 0.999


def test_a_layer_below_an_if_in_a_loop_stays_float_and_says_why() -> None:
    samples = {"x": RNG.standard_normal((4, 1, 6, 10, 10)).astype(np.float32), "go": np.array([True, False, True, True])}
    out, report = onnxpress.optimize(loop_model(with_if=True), QDQ_EVERY_LAYER, samples=samples, verify="off")
    kept = report.quantization["kept_float"]
    assert "cannot be calibrated" in kept["loop_if_conv"]
    assert out.SerializeToString() and report.records[-1].stats["sites"] == 0


def test_gptq_and_the_fidelity_search_reach_into_bodies() -> None:
    """GPTQ's statistics and the search's trials go through the same exposure: branch layers are rounded by GPTQ
    and scored, and the result meets the target."""
    samples = {"x": RNG.standard_normal((8, 1, 4, 12, 12)).astype(np.float32), "cond": np.array([i % 2 == 0 for i in range(8)])}
    pipeline = 'qdq{keep_fragile=false,min_macs=0,min_intensity=0,rounding=gptq,fidelity="cosine>=0.9999"}'
    _, report = onnxpress.optimize(if_model(), pipeline, samples=samples, verify="off", sensitivity_table=True)
    assert report.records[-1].stats["gptq_weights"] == 1  # the 1x1 conv reads as a matrix (3x3 convs do not)
    scored = {row["node"] for row in report.quantization["sensitivity"]}
    assert scored == {"then_conv1", "then_conv2", "else_conv"}
    assert report.quantization["fidelity"]["met"]


def recurrent_model(op: str = "LSTM") -> onnx.ModelProto:
    """x [T=5, B=1, I=16] -> LSTM/GRU/RNN (hidden 32, constant W/R/B) -> Y, Y_h."""
    hidden, inputs, gates = 32, 16, {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "W", "R", "B"], ["y", "y_h"], hidden_size=hidden, name="recurrent")],
        "recurrent_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), helper.make_tensor_value_info("y_h", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_w(1, gates * hidden, inputs), "W"), numpy_helper.from_array(_w(1, gates * hidden, hidden), "R"),
         numpy_helper.from_array(_w(1, 2 * gates * hidden) * 0.1, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(
    ("op", "pipeline", "target", "emitted"),
    [
        ("LSTM", "dynamic-quant", None, "LSTM"), ("LSTM", "dynamic-quant", "ort", "DynamicQuantizeLSTM"),
        ("LSTM", "qdq", "ort", "DynamicQuantizeLSTM"), ("GRU", "dynamic-quant", "ort", "GRU"), ("RNN", "qdq", None, "RNN"),
    ],
)
def test_recurrent_weights_become_int8_rows(op: str, pipeline: str, target: str | None, emitted: str) -> None:
    """LSTM/GRU/RNN weights as int8 with one scale per gate row: onnxruntime's DynamicQuantizeLSTM for LSTMs
    under --target ort, else the standard op reading them through Cast and Mul; outputs stay close to float."""
    proto = recurrent_model(op)
    samples = {"x": RNG.standard_normal((4, 5, 1, 16)).astype(np.float32)}
    out, report = onnxpress.optimize(proto, pipeline, samples=samples, verify="off", target=target)
    assert report.records[-1].stats["recurrent_quantized"] == 1
    model = onnxpress.load(out)
    assert emitted in [n.op_type for n in model.graph] and "W" not in model.graph.initializers
    assert any(v.const_value is not None and v.const_value.dtype == ir.DataType.INT8 for v in model.graph.initializers.values())
    x = RNG.standard_normal((5, 1, 16)).astype(np.float32)
    ref, got = make_session(onnxpress.load(proto)).run(None, {"x": x}), make_session(model).run(None, {"x": x})
    for a, b in zip(ref, got):
        assert _cosine(a, b) > 0.999


def test_a_name_reused_by_sibling_branches_keeps_those_layers_float() -> None:
    """Both branches write a value named 'h': statistics are kept by name, so neither layer is quantized on
    mixed ranges; they stay float and the report says why."""
    branches = [
        helper.make_graph([helper.make_node("Conv", ["x", w], ["h"], name=f"{label}_conv", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["h"], [f"{label}_out"])],
                          label, [], [helper.make_tensor_value_info(f"{label}_out", TensorProto.FLOAT, None)])
        for label, w in (("then", "w1"), ("else", "w2"))
    ]
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branches[0], else_branch=branches[1])], "twins",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_w(8, 4, 3, 3), "w1"), numpy_helper.from_array(_w(8, 4, 3, 3) * 5, "w2")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    samples = {"x": RNG.standard_normal((4, 1, 4, 8, 8)).astype(np.float32), "cond": np.array([True, False, True, False])}
    _, report = onnxpress.optimize(proto, QDQ_EVERY_LAYER, samples=samples, verify="off")
    kept = report.quantization["kept_float"]
    assert "another value too" in kept["then_conv"] and "another value too" in kept["else_conv"]


def scan_model() -> onnx.ModelProto:
    """Scan over 6 steps of x [6, 1, 8]: state s -> s + Relu(MatMul(x_t, W)); every step's product is a scan output."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_t", "w"], ["p"], name="scan_matmul"), helper.make_node("Relu", ["p"], ["r"]),
         helper.make_node("Add", ["s_in", "r"], ["s_out"]), helper.make_node("Identity", ["r"], ["step"])],
        "body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [1, 8]), helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1, 8]), helper.make_tensor_value_info("step", TensorProto.FLOAT, [1, 8])],
    )
    graph = helper.make_graph(
        [helper.make_node("Scan", ["s0", "x"], ["s", "steps"], num_scan_inputs=1, body=body, scan_output_axes=[0], name="scan")],
        "scan_net",
        [helper.make_tensor_value_info("s0", TensorProto.FLOAT, [1, 8]), helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 1, 8])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, None), helper.make_tensor_value_info("steps", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_w(8, 8), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_scan_body_values_come_out_per_step_and_its_layer_is_quantized() -> None:
    """A Scan body's value comes out as one more scan output (its scan_output_axes extended), every step
    stacked; qdq then quantizes the MatMul inside the body on statistics of all steps."""
    model = onnxpress.load(scan_model())
    exposed = bodies.expose(model, ["p"])
    (alias,) = exposed.aliases
    assert exposed.stacked[alias] == 1
    scan = next(n for n in exposed.model.graph if n.op_type == "Scan")
    assert list(scan.attributes["scan_output_axes"].value) == [0, 0]
    session = make_session(with_outputs(exposed.model, [alias]))
    feed = {"s0": np.zeros((1, 8), np.float32), "x": RNG.standard_normal((6, 1, 8)).astype(np.float32)}
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    assert got[alias].shape == (6, 1, 8) and exposed.fold(alias, got[alias]).shape == (6, 8)

    proto = scan_model()
    samples = {"s0": np.zeros((4, 1, 8), np.float32), "x": RNG.standard_normal((4, 6, 1, 8)).astype(np.float32)}
    out, report = onnxpress.optimize(proto, QDQ_EVERY_LAYER, samples=samples, verify="off")
    assert report.records[-1].stats["sites"] == 1 and "QuantizeLinear" in _ops_in_bodies(out)
    for a, b in zip(make_session(onnxpress.load(proto)).run(None, feed), make_session(onnxpress.load(out)).run(None, feed)):
        assert _cosine(a, b) > 0.99


@pytest.mark.parametrize(("pipeline", "target"), [("dynamic-quant{smooth=0.5}", None), ("weight-only{method=gptq}", "ort")])
def test_statistics_passes_skip_names_sibling_branches_share(pipeline: str, target: str | None) -> None:
    """Both branches' MatMuls read a value named 'h': smoothing and GPTQ, whose statistics are kept by name, leave
    those inputs alone (plain dynamic int8 / round-to-nearest) instead of mixing the branches' rows."""
    branches = [
        helper.make_graph([helper.make_node("Relu", ["x"], ["h"]), helper.make_node("MatMul", ["h", w], [f"{label}_out"], name=f"{label}_matmul")],
                          label, [], [helper.make_tensor_value_info(f"{label}_out", TensorProto.FLOAT, None)])
        for label, w in (("then", "w1"), ("else", "w2"))
    ]
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branches[0], else_branch=branches[1])], "twins",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_w(64, 64), "w1"), numpy_helper.from_array(_w(64, 64) * 3, "w2")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    samples = {"x": RNG.standard_normal((4, 2, 64)).astype(np.float32), "cond": np.array([True, False, True, False])}
    out, report = onnxpress.optimize(proto, pipeline, samples=samples, verify="off", target=target)
    assert report.records[-1].stats["matmuls_quantized"] == 2
    body_names = [n.name for node in out.graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for n in a.g.node]
    assert not any("_smooth" in name for name in body_names), body_names  # no smoothing Mul on the shared name
    for cond in (True, False):
        feed = {"x": RNG.standard_normal((2, 64)).astype(np.float32), "cond": np.array(cond)}
        ref, got = make_session(onnxpress.load(proto)).run(None, feed)[0], make_session(onnxpress.load(out)).run(None, feed)[0]
        assert _cosine(ref, got) > 0.99


def test_a_loop_whose_values_change_shape_per_iteration_leaves_its_layer_float() -> None:
    """An inner Loop whose trip count follows the outer one stacks differently shaped values per outer
    iteration, which onnxruntime refuses: calibration leaves those values out (tried on the first sample) and
    qdq keeps the layer float with a reason, instead of failing the pipeline."""
    inner = helper.make_graph(
        [helper.make_node("MatMul", ["s_in2", "w"], ["p"], name="inner_matmul"), helper.make_node("Relu", ["p"], ["s_out2"]),
         helper.make_node("Identity", ["c_in2"], ["c_out2"])],
        "inner", [helper.make_tensor_value_info("j", TensorProto.INT64, []), helper.make_tensor_value_info("c_in2", TensorProto.BOOL, []),
                  helper.make_tensor_value_info("s_in2", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out2", TensorProto.BOOL, []), helper.make_tensor_value_info("s_out2", TensorProto.FLOAT, None)],
    )
    outer = helper.make_graph(
        [helper.make_node("Add", ["i", "one"], ["n"]), helper.make_node("Loop", ["n", "", "s_in"], ["s_out"], body=inner),
         helper.make_node("Identity", ["c_in"], ["c_out"])],
        "outer", [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                  helper.make_tensor_value_info("s_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("s_out", TensorProto.FLOAT, None)],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=outer)], "nested",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_w(64, 64) * 0.3, "w"), numpy_helper.from_array(np.array(3, np.int64), "trips"), numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    samples = {"x": RNG.standard_normal((3, 1, 64)).astype(np.float32)}
    out, report = onnxpress.optimize(proto, QDQ_EVERY_LAYER, samples=samples, verify="off")
    assert "change shape between iterations" in report.quantization["kept_float"]["inner_matmul"]
    x = {"x": RNG.standard_normal((1, 64)).astype(np.float32)}
    assert _cosine(make_session(onnxpress.load(proto)).run(None, x)[0], make_session(onnxpress.load(out)).run(None, x)[0]) > 0.999
