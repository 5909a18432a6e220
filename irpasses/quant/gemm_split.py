"""Gemm layers as MatMul + Add, so the MatMul-only quantizers (weight-only, dynamic-quant) take them too.

``optimize`` fuses MatMul + Add into Gemm (one node, what onnxruntime and TensorRT like for float), and
exporters write Linear layers as Gemm with transB: a scikit-learn MLP or a torch Linear stack then has no
MatMul left, and ``w8`` / ``int8-dynamic`` changed nothing. Splitting back is exact: B' = alpha * B (transposed
under transB), C' = beta * C.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.quant.placement import excluded_by
from onnxpress.irpasses.quant.qparams import add_constant


def splittable(node: ir.Node, min_elements: int) -> bool:
    """A Gemm whose B is a constant float matrix of at least ``min_elements`` and whose C, if scaled, is constant."""
    if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or node.attributes.get_int("transA", 0):
        return False
    b = node.inputs[1] if len(node.inputs) > 1 else None
    if b is None or b.const_value is None or len(b.const_value.shape) != 2 or b.const_value.size < min_elements:
        return False
    if b.const_value.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
        return False
    c = node.inputs[2] if len(node.inputs) > 2 else None
    return c is None or node.attributes.get_float("beta", 1.0) == 1.0 or c.const_value is not None


def split_gemms(model: ir.Model, min_elements: int, exclude: list[str] | tuple[str, ...] = ()) -> int:
    """Rewrite every splittable Gemm of the main graph and its bodies as MatMul (+ Add), except those ``exclude``
    names (op types or node-name patterns, as the quantizers read it); returns how many."""
    gemms = [n for n in ir.traversal.RecursiveGraphIterator(model.graph)
             if splittable(n, min_elements) and excluded_by(n, list(exclude)) is None]
    for gemm in gemms:
        _split(gemm)
    return len(gemms)


def _split(gemm: ir.Node) -> None:
    graph = gemm.graph
    assert graph is not None
    name = gemm.name or "gemm"
    b = gemm.inputs[1].const_value.numpy()
    weight = (b.T if gemm.attributes.get_int("transB", 0) else b) * np.asarray(gemm.attributes.get_float("alpha", 1.0), b.dtype)
    w = add_constant(graph, f"{gemm.inputs[1].name or name}_kn", np.ascontiguousarray(weight))
    nodes = [ir.node("MatMul", [gemm.inputs[0], w], name=f"{name}_matmul")]
    c = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    if c is not None:
        beta = gemm.attributes.get_float("beta", 1.0)
        if beta != 1.0:
            c = add_constant(graph, f"{c.name or name}_scaled", c.const_value.numpy() * np.asarray(beta, b.dtype))
        nodes.append(ir.node("Add", [nodes[0].outputs[0], c], name=f"{name}_bias"))
    graph.insert_before(gemm, nodes)
    out = gemm.outputs[0]
    out.replace_all_uses_with(nodes[-1].outputs[0], replace_graph_outputs=True)
    result, (result.name, out.name) = nodes[-1].outputs[0], (out.name, None)
    result.type, result.shape = out.type, out.shape  # the name's value_info keeps its type
    graph.remove(gemm, safe=True)
