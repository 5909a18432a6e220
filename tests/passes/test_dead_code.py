"""dead-code inside If/Loop/Scan bodies: nodes (onnx-ir's pass) and initializers (ours)."""

from __future__ import annotations

import numpy as np
import onnxpress
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session

RNG = np.random.default_rng(2)


def test_body_initializers_nothing_reads_are_removed() -> None:
    """A branch's weight that only a dead node read goes with it (silero-vad kept its folded LSTM weights'
    originals: +0.95 MB on 2.3 MB); the weights the branch computes with stay."""
    used = numpy_helper.from_array(RNG.standard_normal((4, 4)).astype(np.float32), "used")
    dead = numpy_helper.from_array(RNG.standard_normal((64, 64)).astype(np.float32), "dead")
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "used"], ["t"]), helper.make_node("Unsqueeze", ["dead", "axes"], ["never_read"])],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)], [used, dead],
    )
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(np.array([0], np.int64), "axes")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, _ = onnxpress.optimize(proto, "dead-code", verify="off")
    branch = onnxpress.load(out).graph.node(0).attributes["then_branch"].value
    assert list(branch.initializers) == ["used"]
    feed = {"x": RNG.standard_normal((2, 4)).astype(np.float32), "c": np.array(True)}
    np.testing.assert_array_equal(make_session(onnxpress.load(proto)).run(None, feed)[0], make_session(onnxpress.load(out)).run(None, feed)[0])
