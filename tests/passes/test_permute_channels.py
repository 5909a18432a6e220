"""permute-channels: a permutation folded into the producer, the elementwise ops between and the readers keeps
the model's outputs, and keeps more importance under 2:4; regions it cannot fold are refused with a reason."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.sparsity.permutation import kept_importance

K, H, N = 32, 64, 48


def _ffn(residual: bool = False) -> onnx.ModelProto:
    """x -> MatMul(W1) + b1 -> Gelu spelled out (x * 0.5 * (1 + erf(x / sqrt 2))) -> MatMul(W2) [-> + h]."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((K, H)).astype(np.float32)
    w2 = (rng.standard_normal((H, N)) * rng.uniform(0.1, 3, (H, 1))).astype(np.float32)  # channels of unequal weight
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a"], name="up"),
        helper.make_node("Add", ["a", "b1"], ["h"], name="bias"),
        helper.make_node("Div", ["h", "sqrt2"], ["hs"], name="div"),
        helper.make_node("Erf", ["hs"], ["e"], name="erf"),
        helper.make_node("Add", ["e", "one"], ["e1"], name="add1"),
        helper.make_node("Mul", ["h", "e1"], ["he"], name="mul"),
        helper.make_node("Mul", ["he", "half"], ["g"], name="half_mul"),
        helper.make_node("MatMul", ["g", "W2"], ["y0"], name="down"),
    ]
    inits = [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(rng.standard_normal(H).astype(np.float32), "b1"),
             numpy_helper.from_array(np.array(1.4142135, np.float32), "sqrt2"), numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"), numpy_helper.from_array(w2, "W2")]
    out = "y0"
    if residual:  # the hidden channels also leave through a second path: no permutation can be folded
        nodes.append(helper.make_node("ReduceSum", ["h", "axes"], ["side"], keepdims=1, name="side"))
        nodes.append(helper.make_node("Add", ["y0", "side"], ["y"], name="residual"))
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axes"))
        out = "y"
    graph = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", K])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _samples(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((8, K)).astype(np.float32)} for _ in range(count)]


def _weight(model, name_start: str) -> np.ndarray:
    node = next(n for n in model.graph if n.op_type == "MatMul" and n.name == name_start)
    return node.inputs[1].const_value.numpy()


def test_folded_permutation_keeps_outputs_and_more_importance() -> None:
    model = onnxpress.load(_ffn())
    out, report = onnxpress.optimize(model, "permute-channels{importance=magnitude,seconds=0.3}", samples=_samples(), verify="end")
    stats = report.records[-1].stats
    assert stats["regions"] == 1 and stats["permuted"] == 1
    before, after = np.abs(_weight(model, "down")), np.abs(_weight(out, "down"))
    assert kept_importance(after, 4, 2) > kept_importance(before, 4, 2) * 1.01
    assert sorted(after.sum(axis=1)) == pytest.approx(sorted(before.sum(axis=1)))  # the same rows, reordered
    for sample in _samples():
        a = make_session(model).run(None, sample)[0]
        b = make_session(out).run(None, sample)[0]
        _assert_same_up_to_summation_order(b, a)


def test_channels_leaving_another_way_are_refused_with_the_reason() -> None:
    model = onnxpress.load(_ffn(residual=True))
    out, report = onnxpress.optimize(model, "permute-channels", verify="off")
    assert report.records[-1].stats["permuted"] == 0
    assert np.array_equal(_weight(out, "down"), _weight(model, "down"))


def test_then_prune_keeps_the_2of4_pattern_through_int8() -> None:
    from onnxpress.kernels import formats

    model = onnxpress.load(_ffn())
    pipeline = "permute-channels{importance=magnitude,seconds=0.2},prune{pattern=2:4,method=sparsegpt,min_elements=1024},qdq{rounding=gptq}"
    out, _ = onnxpress.optimize(model, pipeline,
                                samples=_samples(8), verify="off")
    int8 = [v.const_value.numpy() for name, v in out.graph.initializers.items()
            if name.startswith("W2") and v.const_value.dtype == onnx_ir.DataType.INT8]
    assert len(int8) == 1
    formats.nm_positions(int8[0].astype(np.float32), 4, 2)  # raises unless every group of 4 along K keeps <= 2
    assert (int8[0] == 0).mean() >= 0.5


def test_unstructured_pattern_is_refused() -> None:
    with pytest.raises(onnxpress.PassOptionError, match="unstructured"):
        onnxpress.optimize(onnxpress.load(_ffn()), "permute-channels{pattern=unstructured}", verify="off")


def test_report_json_carries_the_per_layer_details(tmp_path) -> None:
    """opt --report: kept importance with and without permutation per region, and pruning's per-layer table."""
    import json

    from onnxpress.tools.cli import main

    path, out, report = tmp_path / "ffn.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(_ffn(), path)
    np.savez(tmp_path / "calib.npz", x=np.stack([s["x"] for s in _samples(8)]))
    pipeline = "permute-channels{importance=magnitude,seconds=0.1},prune{pattern=2:4,method=magnitude,min_elements=1024}"
    args = ["opt", str(path), "-o", str(out), "-p", pipeline, "--calib", str(tmp_path / "calib.npz"), "--report", str(report)]
    assert main([*args, "-q", "--no-verify"]) == 0
    details = json.loads(report.read_text())["report"]["details"]
    region = details["permutation"]["regions"][0]
    assert region["readers"] == ["down"] and region["kept_after"] >= region["kept_before"]
    assert details["pruning"]


C_IN, C_MID, C_OUT = 8, 16, 12


def _cnn(bias_shape: tuple[int, ...] = (C_MID, 1, 1)) -> onnx.ModelProto:
    """x -> Conv 1x1 -> BatchNormalization -> Relu -> depthwise Conv 3x3 -> Add(per-channel constant) -> MaxPool
    -> Conv 3x3 (the reader) -> y: every op between the two Convs keeps the channels apart."""
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.2, 3, C_MID).astype(np.float32)
    inits = [numpy_helper.from_array(rng.standard_normal((C_MID, C_IN, 1, 1)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal(C_MID).astype(np.float32), "B1"),
             numpy_helper.from_array(scale, "bn_scale"), numpy_helper.from_array(rng.standard_normal(C_MID).astype(np.float32), "bn_bias"),
             numpy_helper.from_array(rng.standard_normal(C_MID).astype(np.float32), "bn_mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, C_MID).astype(np.float32), "bn_var"),
             numpy_helper.from_array(rng.standard_normal((C_MID, 1, 3, 3)).astype(np.float32), "Wdw"),
             numpy_helper.from_array(rng.standard_normal(C_MID).astype(np.float32), "Bdw"),
             numpy_helper.from_array(rng.standard_normal(bias_shape).astype(np.float32), "shift"),
             numpy_helper.from_array((rng.standard_normal((C_OUT, C_MID, 3, 3)) * scale[None, :, None, None]).astype(np.float32), "W2")]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["a"], name="pw"),
        helper.make_node("BatchNormalization", ["a", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["b"], name="bn"),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "Wdw", "Bdw"], ["d"], group=C_MID, pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("Add", ["d", "shift"], ["s"], name="shift"),
        helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Conv", ["p", "W2"], ["y"], pads=[1, 1, 1, 1], name="reader"),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C_IN, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _images(count: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(4)
    return [{"x": rng.standard_normal((1, C_IN, 10, 10)).astype(np.float32)} for _ in range(count)]


def _kernel(model, name: str) -> np.ndarray:
    return next(n for n in model.graph if n.name == name).inputs[1].const_value.numpy()

def _assert_same_up_to_summation_order(actual: np.ndarray, expected: np.ndarray) -> None:
    """A permutation reorders each dot product's float32 sum, which moves an output by a few ulps of the largest
    terms, not of the output itself: the tolerance is 1e-5 of the output's scale (a wrong order moves it by ~1)."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))



@pytest.mark.parametrize("importance", ["magnitude", "wanda"])
def test_conv_permutation_folds_through_batchnorm_depthwise_and_pooling(importance: str) -> None:
    from onnxpress.irpasses.sparsity.permute_channels import _reader_matrix

    model = onnxpress.load(_cnn())
    pipeline = f"permute-channels{{importance={importance},seconds=0.3}}"
    out, report = onnxpress.optimize(model, pipeline, samples=_images(), verify="end")
    stats = report.records[-1].stats
    assert stats["regions"] == 1 and stats["permuted"] == 1, stats
    reader = next(n for n in out.graph if n.name == "reader")
    before, after = np.abs(_reader_matrix(next(n for n in model.graph if n.name == "reader"))), np.abs(_reader_matrix(reader))
    assert kept_importance(after, 4, 2) > kept_importance(before, 4, 2) * 1.01
    order = [int(np.flatnonzero((_kernel(model, "pw")[:, :, 0, 0] == row[:, 0, 0]).all(axis=1))[0]) for row in _kernel(out, "pw")]
    assert sorted(order) == list(range(C_MID)) and order != list(range(C_MID))
    np.testing.assert_array_equal(_kernel(out, "dw"), _kernel(model, "dw")[order])  # the depthwise rows follow
    np.testing.assert_array_equal(_kernel(out, "reader"), _kernel(model, "reader")[:, order])
    for sample in _images():
        a = make_session(model, optimization="disable").run(None, sample)[0]
        b = make_session(out, optimization="disable").run(None, sample)[0]
        _assert_same_up_to_summation_order(b, a)


def test_conv_constant_on_the_wrong_axis_is_refused_with_the_reason() -> None:
    """A constant of shape [16] broadcasts along the last (width) axis, not the channels: no permutation folds."""
    model = onnxpress.load(_cnn(bias_shape=(C_MID,)))
    sample = {"x": np.random.default_rng(5).standard_normal((1, C_IN, 10, C_MID)).astype(np.float32)}
    out, report = onnxpress.optimize(model, "permute-channels{importance=magnitude}", samples=[sample], verify="off")
    assert report.records[-1].stats["permuted"] == 0
    refused = report.details["permutation"]["refused"]
    assert "shape [16]" in refused["pw"] and "axis 1" in refused["pw"]
    assert np.array_equal(_kernel(out, "reader"), _kernel(model, "reader"))


def _se_cnn(gate_read_elsewhere: bool = False) -> onnx.ModelProto:
    """x -> Conv 1x1 -> HardSwish -> h; h * HardSigmoid(Conv(Relu(Conv(GlobalAveragePool(h))))) (a squeeze-and-
    excitation gate) -> Conv 1x1 (the reader): the gate's last Conv writes h's channels, so it permutes with them."""
    rng = np.random.default_rng(6)
    scale = rng.uniform(0.2, 3, C_MID).astype(np.float32)
    arrays = {"W1": rng.standard_normal((C_MID, C_IN, 1, 1)), "Wr": rng.standard_normal((4, C_MID, 1, 1)), "Br": rng.standard_normal(4),
              "We": rng.standard_normal((C_MID, 4, 1, 1)), "Be": rng.standard_normal(C_MID),
              "W2": rng.standard_normal((C_OUT, C_MID, 1, 1)) * scale[None, :, None, None]}
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), name) for name, a in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["a"], name="pw"),
        helper.make_node("HardSwish", ["a"], ["h"], name="act"),
        helper.make_node("GlobalAveragePool", ["h"], ["g"], name="gap"),
        helper.make_node("Conv", ["g", "Wr", "Br"], ["r"], name="reduce"),
        helper.make_node("Relu", ["r"], ["rr"], name="relu"),
        helper.make_node("Conv", ["rr", "We", "Be"], ["e"], name="expand"),
        helper.make_node("HardSigmoid", ["e"], ["gate"], name="sigmoid"),
        helper.make_node("Mul", ["h", "gate"], ["m"], name="scale"),
        helper.make_node("Conv", ["m", "W2"], ["y"], name="reader"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if gate_read_elsewhere:
        outputs.append(helper.make_tensor_value_info("gate", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C_IN, 6, 6])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_squeeze_excitation_gate_takes_the_permutation_too() -> None:
    model = onnxpress.load(_se_cnn())
    samples = [{"x": np.random.default_rng(i).standard_normal((1, C_IN, 6, 6)).astype(np.float32)} for i in range(3)]
    out, report = onnxpress.optimize(model, "permute-channels{importance=magnitude,seconds=0.2}", samples=samples, verify="end")
    regions = {r["producer"]: r for r in report.details["permutation"]["regions"]}
    assert regions["pw"]["permuted"] and sorted(regions["pw"]["readers"]) == ["reader", "reduce"]
    order = [int(np.flatnonzero((_kernel(model, "pw")[:, :, 0, 0] == row[:, 0, 0]).all(axis=1))[0]) for row in _kernel(out, "pw")]
    assert order != list(range(C_MID))
    np.testing.assert_array_equal(_kernel(out, "expand")[:, :, 0, 0].sum(axis=1), _kernel(model, "expand")[order][:, :, 0, 0].sum(axis=1))
    for sample in samples:
        _assert_same_up_to_summation_order(make_session(out, optimization="disable").run(None, sample)[0],
                                           make_session(model, optimization="disable").run(None, sample)[0])


def test_gate_read_elsewhere_is_refused() -> None:
    model = onnxpress.load(_se_cnn(gate_read_elsewhere=True))
    _, report = onnxpress.optimize(model, "permute-channels{importance=magnitude,seconds=0.2}", verify="off")
    assert "pw" in report.details["permutation"]["refused"]
    assert "gate" in report.details["permutation"]["refused"]["pw"]
