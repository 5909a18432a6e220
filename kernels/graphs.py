"""One-op ONNX models around the ``onnxpress`` ops (and their dense equivalents): for the self-test, the
tests and ``tools/bench kernels``. Input ``A``, output ``Y``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxpress.kernels import DOMAIN
from onnxpress.kernels.formats import SparseWeights

IR_VERSION = 9  # onnxruntime 1.20+ reads it


def _model(nodes: list[onnx.NodeProto], initializers: dict[str, np.ndarray], custom: bool,
           a_dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "kernel", [helper.make_tensor_value_info("A", a_dtype, None)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(DOMAIN, 1)] if custom else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = IR_VERSION
    return model


def sparse_matmul(w: SparseWeights, bias: np.ndarray | None = None, name: str = "sparse") -> onnx.ModelProto:
    inits = {"values": w.values, "indices": w.indices,
             "scales": w.scales if w.scales is not None else np.zeros(0, np.float32)}
    names = ["A", "values", "indices", "scales"]
    if bias is not None:
        inits["bias"] = bias.astype(np.float32)
        names.append("bias")
    node = helper.make_node("SparseMatMul", names, ["Y"], domain=DOMAIN, name=name, N=w.N, m=w.m, n=w.n)
    return _model([node], inits, True)


def lut_matmul(codes: np.ndarray | bytes, codebook: np.ndarray, K: int, N: int, bits: int, group_size: int = 0,
               bias: np.ndarray | None = None, name: str = "lut", accuracy_level: int = 0) -> onnx.ModelProto:
    code_input = np.frombuffer(codes, np.uint8) if isinstance(codes, bytes) else codes
    inits = {"codes": code_input, "codebook": codebook}
    names = ["A", "codes", "codebook"]
    if bias is not None:
        inits["bias"] = bias.astype(np.float32)
        names.append("bias")
    node = helper.make_node("LutMatMul", names, ["Y"], domain=DOMAIN, name=name, K=K, N=N, bits=bits, group_size=group_size,
                            accuracy_level=accuracy_level)
    return _model([node], inits, True)


def decode_weights(blob: bytes, codebook: np.ndarray, shape: tuple[int, ...], name: str = "decode") -> onnx.ModelProto:
    """Y = DecodeWeights(blob, codebook) cast to float32 and added to A (so the model has an input)."""
    decoded = helper.make_node("DecodeWeights", ["blob", "codebook"], ["W"], domain=DOMAIN, name=name, shape=list(shape))
    cast = helper.make_node("Cast", ["W"], ["Wf"], to=TensorProto.FLOAT)
    add = helper.make_node("Add", ["A", "Wf"], ["Y"])
    return _model([decoded, cast, add], {"blob": np.frombuffer(blob, np.uint8), "codebook": codebook}, True)


def dense_matmul(weight: np.ndarray, bias: np.ndarray | None = None) -> onnx.ModelProto:
    inits = {"W": weight.astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["A", "W"], ["Y" if bias is None else "AW"])]
    if bias is not None:
        inits["B"] = bias.astype(np.float32)
        nodes.append(helper.make_node("Add", ["AW", "B"], ["Y"]))
    return _model(nodes, inits, False)


def session(model: onnx.ModelProto, threads: int = 1, optimization: str = "all", spinning: bool = True):
    """An onnxruntime session with our library registered when the model needs it. ``spinning=False`` stops
    idle pool threads from spinning, so sessions timed in turn do not steal each other's cores."""
    import onnxruntime as ort
    from onnxpress import kernels

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if any(o.domain == DOMAIN for o in model.opset_import):
        kernels.register(options)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
