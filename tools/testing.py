"""Helpers for tests of passes, here and in plug-in packages: textual ONNX in, numerics checked with ORT."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session, run_session


def parse_model(text: str) -> ir.Model:
    """Build an onnx-ir model from ONNX textual syntax (``onnx.parser``)."""
    proto = onnx.parser.parse_model(text)
    onnx.checker.check_model(proto)
    return ir.serde.deserialize_model(proto)


def op_types(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def run(model: ir.Model, **inputs: np.ndarray) -> list[np.ndarray]:
    """Outputs of ``model`` on ``inputs`` with onnxruntime (no ORT graph optimization)."""
    return list(run_session(make_session(model), inputs).values())


def assert_same_outputs(before: ir.Model | onnx.ModelProto, after: ir.Model, inputs: dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-6) -> None:
    ref = run_session(make_session(before), inputs)
    got = run_session(make_session(after), inputs)
    assert list(ref) == list(got), f"outputs differ: {list(ref)} vs {list(got)}"
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=rtol, atol=atol, err_msg=f"output {name}")


def digest(folder: os.PathLike[str] | str) -> dict[str, str]:
    """Hash of every file under ``folder``: inputs must be byte-identical after any command."""
    root = Path(folder)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def mlp_proto(hidden: int = 16) -> onnx.ModelProto:
    """x[batch,8] -> MatMul/Add/Relu/Identity/MatMul -> y[batch,4], plus a dead Sigmoid branch."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, hidden)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
        helper.make_node("Identity", ["r"], ["ri"], name="id1"),
        helper.make_node("MatMul", ["ri", "w2"], ["y"], name="mm2"),
        helper.make_node("Sigmoid", ["h"], ["dead"], name="dead1"),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w1, b1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def conv_net_proto(opset: int = 17) -> onnx.ModelProto:
    """x[1,3,16,16] -> Conv/Relu -> Conv/HardSwish -> Conv -> Sigmoid (a small detector-like net)."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    inits = [
        numpy_helper.from_array(w(8, 3, 3, 3), "w1"), numpy_helper.from_array(w(8), "b1"),
        numpy_helper.from_array(w(8, 8, 3, 3), "w2"), numpy_helper.from_array(w(8), "b2"),
        numpy_helper.from_array(w(1, 8, 1, 1), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c2"], ["h2"], name="hswish2"),
        helper.make_node("Conv", ["h2", "w3"], ["c3"], name="head"),
        helper.make_node("Sigmoid", ["c3"], ["y"], name="scores"),
    ]
    graph = helper.make_graph(
        nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 16, 16])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def embedding_proto(weight: np.ndarray, table: np.ndarray, opset: int = 21) -> onnx.ModelProto:
    """ids [1, seq] -> Gather(table) -> MatMul(weight) -> Relu: an embedding table and a projection, the two
    weight kinds clustering and entropy coding handle."""
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0, name="embed"),
        helper.make_node("MatMul", ["emb", "W"], ["h"], name="proj"),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "seq"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model
