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
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


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
