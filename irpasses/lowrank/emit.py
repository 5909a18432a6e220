"""Graph rewrites of ``lowrank``: one layer into its factors. The original node stays last in each chain, so it
keeps its output value (names the rest of the graph reads), its bias and whatever attributes still apply."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.quant.qparams import add_constant


def split_matrix(node: ir.Node, first: np.ndarray, second: np.ndarray) -> None:
    """node(x, W) -> node'(head(x, A), B) for MatMul/Gemm W [K, N] = A [K, r] B [r, N]; a 1x1 Conv becomes two
    1x1 Convs, the stride (and dilation) on the first, the bias on the second."""
    if node.op_type == "Conv":  # [K, r] / [r, N] back to kernels [r, K, 1, 1] / [N, r, 1, 1]
        attributes = {k: a.value for k, a in node.attributes.items() if k in ("strides", "dilations", "auto_pad")}
        head = _head(node, "Conv", np.ascontiguousarray(first.T)[:, :, None, None], attributes)
        node.attributes.pop("strides", None)
        _retarget(node, head, np.ascontiguousarray(second.T)[:, :, None, None])
        return
    tail = second.T if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) else second
    _retarget(node, _head(node, "MatMul", first, {}), np.ascontiguousarray(tail))


def split_spatial(node: ir.Node, column: np.ndarray, row: np.ndarray) -> None:
    """k x k Conv -> Conv k x 1 (stride, dilation and pads along H) -> Conv 1 x k (along W, and the bias)."""
    strides = node.attributes.get_ints("strides", None) or [1, 1]
    dilations = node.attributes.get_ints("dilations", None) or [1, 1]
    pads = node.attributes.get_ints("pads", None) or [0, 0, 0, 0]
    head = _head(node, "Conv", column, {"kernel_shape": [column.shape[2], 1], "strides": [strides[0], 1],
                                         "dilations": [dilations[0], 1], "pads": [pads[0], 0, pads[2], 0]})
    _set(node, {"kernel_shape": [1, row.shape[3]], "strides": [1, strides[1]], "dilations": [1, dilations[1]],
                "pads": [0, pads[1], 0, pads[3]]})
    _retarget(node, head, row)


def split_tucker(node: ir.Node, head: np.ndarray | None, core: np.ndarray, tail: np.ndarray | None) -> None:
    """k x k Conv -> [1x1 Conv to r1 channels] -> k x k core (stride, pads, dilation) -> [1x1 Conv, the bias]."""
    graph = node.graph
    assert graph is not None
    source = node.inputs[0]
    if head is not None:
        first = _head(node, "Conv", head, {"kernel_shape": [1, 1]})
        source = first.outputs[0]
    if tail is None:
        node.replace_input_with(0, source)
        node.replace_input_with(1, _constant(graph, _base(node) + "_lowrank_core", core))
        return
    attributes = {k: a.value for k, a in node.attributes.items() if k in ("strides", "dilations", "pads", "kernel_shape", "auto_pad")}
    middle = ir.node("Conv", [source, _constant(graph, _base(node) + "_lowrank_core", core)], attributes=attributes,
                     name=f"{node.name}_lowrank_core")
    _typed(node, middle)
    graph.insert_before(node, middle)
    for key in ("strides", "dilations", "pads", "auto_pad"):
        node.attributes.pop(key, None)
    _set(node, {"kernel_shape": [1, 1]})
    node.replace_input_with(0, middle.outputs[0])
    node.replace_input_with(1, _constant(graph, _base(node) + "_lowrank_b", tail))


def _head(node: ir.Node, op: str, weight: np.ndarray, attributes: dict) -> ir.Node:
    """A new node before ``node`` reading its input through ``weight``, which ``node`` then reads from."""
    graph = node.graph
    assert graph is not None
    head = ir.node(op, [node.inputs[0], _constant(graph, _base(node) + "_lowrank_a", weight)], attributes=attributes,
                   name=f"{node.name}_lowrank")
    _typed(node, head)
    graph.insert_before(node, head)
    node.replace_input_with(0, head.outputs[0])
    return head


def _retarget(node: ir.Node, head: ir.Node, weight: np.ndarray) -> None:
    assert node.graph is not None
    node.replace_input_with(1, _constant(node.graph, _base(node) + "_lowrank_b", weight))


def _set(node: ir.Node, attributes: dict) -> None:
    for key, value in attributes.items():
        node.attributes[key] = ir.AttrInt64s(key, list(value))


def _typed(node: ir.Node, new: ir.Node) -> None:
    if node.outputs[0].dtype is not None:
        new.outputs[0].dtype = node.outputs[0].dtype


def _base(node: ir.Node) -> str:
    return node.inputs[1].name or node.name or "weight"


def _constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """An initializer with its type and shape on the value: calibration pieces that take it as an input need them."""
    value = add_constant(graph, name, np.ascontiguousarray(array))
    value.dtype = value.const_value.dtype
    value.shape = ir.Shape(array.shape)
    return value


def bias_slot(node: ir.Node) -> tuple[ir.Node, int] | None:
    """Where ``node``'s per-output-channel bias lives (the node and input index), so the factorization's mean
    output shift can be added to it: Conv's B and Gemm's C (absent: created), or the constant of the one Add
    after a MatMul; None where there is no such place."""
    if node.op_type == "Conv":
        return node, 2
    if node.op_type == "Gemm":
        c = node.inputs[2] if len(node.inputs) > 2 else None
        return (node, 2) if c is None or (c.const_value is not None and c.const_value.size == _out_channels(node)) else None
    uses = list(node.outputs[0].uses())
    if node.op_type == "MatMul" and len(uses) == 1 and uses[0].node.op_type == "Add" and not node.outputs[0].is_graph_output():
        add = uses[0].node
        other = 1 - uses[0].idx
        value = add.inputs[other]
        if value is not None and value.const_value is not None and value.const_value.size == _out_channels(node) \
                and value.const_value.shape[-1] == value.const_value.size:
            return add, other
    return None


def _out_channels(node: ir.Node) -> int:
    shape = node.inputs[1].const_value.shape
    if node.op_type == "Conv":
        return int(shape[0])
    return int(shape[0] if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) else shape[-1])


def correct_bias(node: ir.Node, slot: tuple[ir.Node, int], delta: np.ndarray) -> None:
    """Add ``delta`` (one value per output channel) to the bias at ``slot`` as a new constant (a snapshot's
    tensors are shared with the original: never written in place); a missing Conv/Gemm bias is created."""
    holder, index = slot
    graph = holder.graph
    assert graph is not None
    current = holder.inputs[index] if len(holder.inputs) > index else None
    dtype = node.inputs[1].const_value.dtype.numpy()
    if current is None:
        if len(holder.inputs) <= index:
            holder.resize_inputs(index + 1)
        array = delta.astype(dtype)
    else:
        old = current.const_value.numpy()
        scale = holder.attributes.get_float("beta", 1.0) if holder.op_type == "Gemm" else 1.0
        array = (old.astype(np.float64) + delta.reshape(old.shape) / scale).astype(old.dtype)
    holder.replace_input_with(index, _constant(graph, f"{_base(node)}_lowrank_bias", array))
