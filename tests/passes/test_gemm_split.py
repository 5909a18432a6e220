"""Gemm layers (exporters' Linear, optimize's MatMul+Add fusion) reach the MatMul-only quantizers: w8 and
int8-dynamic used to leave a Gemm-only MLP unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.quant.gemm_split import split_gemms


def _gemm_mlp(trans_b: int = 1, alpha: float = 1.0, beta: float = 1.0) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((128, 64) if trans_b else (64, 128)).astype(np.float32) * 0.1
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=trans_b, alpha=alpha, beta=beta, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1, name="fc2")]
    inits = [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32) * 0.1, "W2"),
             numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _x() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)}


@pytest.mark.parametrize(("trans_b", "alpha", "beta"), [(1, 1.0, 1.0), (0, 0.5, 2.0)])
def test_split_is_exact(trans_b: int, alpha: float, beta: float) -> None:
    model = onnxpress.load(_gemm_mlp(trans_b, alpha, beta))
    expected = make_session(model).run(None, _x())[0]
    assert split_gemms(model, 4096) == 2
    assert [n.op_type for n in model.graph] == ["MatMul", "Add", "Relu", "MatMul", "Add"]
    np.testing.assert_allclose(make_session(model).run(None, _x())[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pipeline", ["w8", "int8-dynamic"])
def test_gemm_only_mlp_is_quantized(pipeline: str) -> None:
    model = onnxpress.load(_gemm_mlp())
    out, _ = onnxpress.optimize(model, pipeline, samples=[_x()] * 4, verify="end")  # numeric check: cosine >= 0.99
    ops = {n.op_type for n in out.graph}
    assert "Gemm" not in ops and ops & {"MatMulNBits", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "Cast"}


def test_scaled_bias_from_a_graph_input_stays_a_gemm() -> None:
    model = onnxpress.load(_gemm_mlp(beta=2.0))
    fc1 = next(n for n in model.graph if n.name == "fc1")
    fc1.replace_input_with(2, model.graph.inputs[0])  # C not constant and beta != 1: not splittable
    assert split_gemms(model, 4096) == 1  # fc2 only
