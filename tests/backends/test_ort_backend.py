from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxpress
import pytest
from onnx import TensorProto, helper
from onnxpress.backends.base import CompileOptions, compile_model, get_backend
from onnxpress.irpasses.core import BackendUnavailableError
from onnxpress.tools.testing import mlp_proto

X = {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}


def test_compile_run_bench_and_artifacts(tmp_path: Path) -> None:
    backend = get_backend("ort")
    model = onnxpress.load(mlp_proto())
    model.ir_version = 14  # what onnx 1.23 writes; onnxruntime 1.31 refuses it unless legalized
    options = CompileOptions(threads=1, extra={"optimized_model": tmp_path / "ort-opt.onnx", "profile_prefix": str(tmp_path / "prof")})
    artifact = compile_model(model, backend, options, tmp_path / "out.onnx")
    assert onnx.load(tmp_path / "out.onnx").ir_version == 13
    assert (tmp_path / "ort-opt.onnx").is_file()
    got = backend.run(artifact, X)["y"]
    ref = np.maximum(X["x"] @ _w(0) + _w(1), 0) @ _w(2)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    result = backend.bench(artifact, X, runs=10, warmup=2)
    assert result.runs == 10 and 0 < result.p10_ms <= result.median_ms <= result.p90_ms and result.threads == 1
    trace = backend.end_profiling(artifact)
    assert trace is not None and Path(trace).read_text().startswith("[")


def _w(i: int) -> np.ndarray:
    return onnx.numpy_helper.to_array(mlp_proto().graph.initializer[i])


def test_capability_names_unsupported_nodes() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"), helper.make_node("Frobnicate", ["a"], ["y"], name="odd", domain="vendor.x")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("vendor.x", 1)]))
    cap = get_backend("ort").capability(model)
    assert [(n.node, n.supported) for n in cap.nodes] == [("ok", True), ("odd", False)]
    assert "no CPUExecutionProvider kernel for vendor.x::Frobnicate" in cap.unsupported[0].reason
    assert "1 of 2 nodes unsupported" in cap.summary()


def test_custom_ops_are_registered_through_onnxruntime_extensions() -> None:
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    @onnx_op(op_type="OnnxpressTestTriple", inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float])
    def triple(x):
        return x * 3

    node = helper.make_node("OnnxpressTestTriple", ["x"], ["y"], domain="ai.onnx.contrib")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)])
    backend = get_backend("ort")
    artifact = compile_model(onnxpress.load(proto), backend, CompileOptions())
    assert artifact.metadata["custom_ops"] is True
    np.testing.assert_array_equal(backend.run(artifact, {"x": np.array([1, 2, 3], np.float32)})["y"], [3, 6, 9])


def test_unknown_backend_is_one_clear_error() -> None:
    with pytest.raises(BackendUnavailableError, match="no backend named 'tpu9000' is installed \\(installed: .*ort.*\\)"):
        get_backend("tpu9000")


def test_internal_sessions_take_large_weights_as_arrays(tmp_path: Path) -> None:
    """make_session hands weights of 64 KiB or more to onnxruntime as arrays behind placeholders (no protobuf
    copies); file-backed weights too, and an unused large initializer must not break the session."""
    import onnx
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper
    from onnxpress.backends.ort import runner

    rng = np.random.default_rng(0)
    w = rng.standard_normal((128, 256)).astype(np.float32)  # 128 KiB
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 256])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w.copy(), "unused")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 128)).astype(np.float32)
    options = runner.ort.SessionOptions()
    model = ir.serde.deserialize_model(proto)
    source, arrays = runner._weights_by_reference(model, options)
    assert len(source) < 1024 and len(arrays) == 1  # the weight is not in the protobuf; the unused one is skipped
    np.testing.assert_allclose(runner.run_session(runner.make_session(model), {"x": x})["y"], x @ w, rtol=1e-5, atol=1e-5)
    onnx.save(proto, tmp_path / "m.onnx", save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    external = ir.load(tmp_path / "m.onnx")
    assert isinstance(external.graph.initializers["w"].const_value, ir.ExternalTensor)
    np.testing.assert_allclose(runner.run_session(runner.make_session(external), {"x": x})["y"], x @ w, rtol=1e-5, atol=1e-5)
