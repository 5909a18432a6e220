"""legalize-kernels: structured MatMul/Gemm weights become onnxpress kernels with the same outputs; dense
weights, small ones and unsupported forms are left alone; the dense copy leaves the file."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.kernels import formats

K, N = 256, 128
pytestmark = pytest.mark.usefixtures("kernels_built")


def _model(weight: np.ndarray, op: str = "MatMul", bias: bool = True, dq_scales: np.ndarray | None = None,
           folded: bool = False) -> onnx.ModelProto:
    """y = Relu(x @ W + b); int8 ``weight`` with ``dq_scales``: W = DequantizeLinear, or with ``folded`` the
    Cast * scale form qdq writes for CPUs without VNNI."""
    nodes, inits = [], []
    w_name = "W"
    if dq_scales is not None and folded:
        inits += [numpy_helper.from_array(weight, "Wq"), numpy_helper.from_array(dq_scales.reshape(1, -1), "Ws")]
        nodes += [helper.make_node("Cast", ["Wq"], ["Wf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["Wf", "Ws"], ["W"])]
    elif dq_scales is not None:
        inits += [numpy_helper.from_array(weight, "Wq"), numpy_helper.from_array(dq_scales, "Ws")]
        nodes.append(helper.make_node("DequantizeLinear", ["Wq", "Ws"], ["W"], axis=1))
    elif op == "Gemm":
        inits.append(numpy_helper.from_array(np.ascontiguousarray(weight.T), "W"))
    else:
        inits.append(numpy_helper.from_array(weight, "W"))
    b = np.linspace(-1, 1, N).astype(np.float32)
    if op == "Gemm":
        inits.append(numpy_helper.from_array(b, "B"))
        nodes.append(helper.make_node("Gemm", ["x", w_name, "B"], ["h"], transB=1, alpha=0.5))
    else:
        nodes.append(helper.make_node("MatMul", ["x", w_name], ["m" if bias else "h"], name="ffn/MatMul"))
        if bias:
            inits.append(numpy_helper.from_array(b, "B"))
            nodes.append(helper.make_node("Add", ["m", "B"], ["h"]))
    nodes.append(helper.make_node("Relu", ["h"], ["y"]))
    shape = [4, K] if op == "Gemm" else [1, "seq", K]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _sparse_weight(seed: int = 0) -> np.ndarray:
    return formats.magnitude_nm(np.random.default_rng(seed).standard_normal((K, N)).astype(np.float32))


def _run(model: ir.Model | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model, optimization="disable").run(None, {"x": x})[0]


def _samples(proto: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    shape = (4, K) if any(n.op_type == "Gemm" for n in proto.graph.node) else (1, 6, K)
    return [{"x": np.random.default_rng(9).standard_normal(shape).astype(np.float32)}]


def _legalized(proto: onnx.ModelProto, **options: object) -> tuple[ir.Model, dict[str, int]]:
    spec = "legalize-kernels{" + ",".join(f"{k}={v}" for k, v in {"cost_model": "always", **options}.items()) + "}"
    model, report = onnxpress.optimize(onnxpress.load(proto), spec, samples=_samples(proto), verify="end")
    return model, report.records[-1].stats


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_sparse_weight_becomes_sparse_matmul_with_the_same_outputs(op: str) -> None:
    proto = _model(_sparse_weight(), op)
    model, stats = _legalized(proto)
    ops = [n.op_type for n in model.graph]
    assert stats["sparse"] == 1 and "SparseMatMul" in ops and op not in ops
    assert "Add" not in ops, "the bias Add is folded into the kernel"
    assert "W" not in model.graph.initializers, "the dense weight must leave the model"
    x = np.random.default_rng(1).standard_normal((4, K) if op == "Gemm" else (1, 7, K)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), _run(proto, x), rtol=1e-5, atol=1e-5)


def test_few_valued_weight_becomes_lut_matmul_exactly() -> None:
    rng = np.random.default_rng(2)
    books = rng.standard_normal((N, 16)).astype(np.float32)
    weight = books[np.arange(N), rng.integers(0, 16, (K, N))]
    proto = _model(weight)
    model, stats = _legalized(proto)
    assert stats["lut"] == 1 and any(n.op_type == "LutMatMul" for n in model.graph)
    x = rng.standard_normal((1, 5, K)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), _run(proto, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("folded", [False, True], ids=["dequantize", "cast-mul"])
def test_int8_sparse_weight_keeps_int8_values(folded: bool) -> None:
    q = np.clip(np.rint(_sparse_weight() * 40), -127, 127).astype(np.int8)
    scales = np.linspace(0.01, 0.02, N).astype(np.float32)
    proto = _model(q, dq_scales=scales, folded=folded)
    model, stats = _legalized(proto)
    node = next(n for n in model.graph if n.op_type == "SparseMatMul")
    assert node.inputs[1].const_value.dtype == ir.DataType.INT8
    assert not {"DequantizeLinear", "Cast", "Mul"} & {n.op_type for n in model.graph}
    assert "Wq" not in model.graph.initializers, "the dense int8 codes must leave the model"
    x = np.random.default_rng(3).standard_normal((1, 3, K)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), _run(proto, x), rtol=1e-5, atol=1e-4)


def test_dense_and_small_weights_are_left_alone() -> None:
    dense = np.random.default_rng(4).standard_normal((K, N)).astype(np.float32)
    _, stats = _legalized(_model(dense))
    assert stats == {"candidates": 0}
    _, stats = _legalized(_model(_sparse_weight()), min_elements=K * N + 1)
    assert stats == {"candidates": 0}


def test_measured_cost_model_reports_every_candidate() -> None:
    proto = _model(_sparse_weight())
    model, report = onnxpress.optimize(onnxpress.load(proto), "legalize-kernels", samples=_samples(proto), verify="end")
    stats = report.records[-1].stats
    assert stats["candidates"] == 1 and stats["sparse"] + stats["kept_dense_slower"] == 1


@pytest.mark.parametrize("option", ["faster", "faster_int8"])
def test_bad_option_is_a_clear_error(option: str) -> None:
    with pytest.raises(onnxpress.OnnxpressError, match=rf"{option}=1.5 must be in \(0, 1\]"):
        proto = _model(_sparse_weight())
        onnxpress.optimize(onnxpress.load(proto), f"legalize-kernels{{{option}=1.5}}", samples=_samples(proto))


def test_ort_compile_times_layers_at_the_samples_rows_and_reports_the_choice() -> None:
    """compile_model hands the first sample to legalization (rows = 6 tokens here, not 1 for the symbolic
    'seq'), and the per-layer decision reaches the artifact's metadata either way the timing goes."""
    from onnxpress.backends.base import CompileOptions, compile_model, get_backend

    proto = _model(_sparse_weight())
    model = onnxpress.load(proto)
    artifact = compile_model(model, get_backend("ort"), CompileOptions(threads=1, samples=_samples(proto)))
    (decision,) = artifact.metadata["kernels"]
    assert decision["node"] == "ffn/MatMul" and decision["kind"] == "sparse" and decision["rows"] == 6
    assert decision["dense_ms"] > 0 and decision["kernel_ms"] > 0
    assert decision["rewritten"] == any(n.op_type == "SparseMatMul" for n in model.graph)
