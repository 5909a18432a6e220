"""Packed models: weights stored as ``onnxpress.DecodeWeights(blob, table)`` nodes (``entropy-code``), and
their way back to plain initializers.

A packed file is a valid ONNX model that onnxruntime runs with our kernel library registered, but a custom
op is never constant-folded: its output is copied out on every run and whatever reads it (a codebook lookup,
a DequantizeLinear) runs every time too. ``decode_packed`` therefore turns each DecodeWeights back into the
initializer it stands for when onnxpress loads a model, so the packed file is a storage and transport form
that loads at ~the float model's speed and then runs exactly like its unpacked twin; ``onnxpress unpack``
writes that twin.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.errors import DataError
from onnxpress.kernels import DOMAIN

OP = "DecodeWeights"
STORED_AS = "stored_as"
"""Attribute naming the dtype the decoded tensor had before packing when the op's 8-bit output widened it
(uint4 / int4 codes), so unpacking restores the original file byte for byte in meaning."""

_NARROW = {"uint4": ir.DataType.UINT4, "int4": ir.DataType.INT4}
logger = logging.getLogger("onnxpress")


def is_decode(node: ir.Node) -> bool:
    return node.domain == DOMAIN and node.op_type == OP


def packed_nodes(model: ir.Model) -> list[ir.Node]:
    return [n for n in ir.traversal.RecursiveGraphIterator(model.graph) if is_decode(n)]


def decode_packed(model: ir.Model) -> int:
    """Replace every DecodeWeights node of ``model`` (subgraphs included) by the initializer it decodes to.
    A corrupted or truncated blob, a checksum mismatch or a code outside the table raises DataError naming
    the tensor; nothing is half-decoded into the model (all blobs are decoded before the graph changes)."""
    nodes = packed_nodes(model)
    decoded = [(node, _decode(node)) for node in nodes]
    for node, tensor in decoded:
        _replace(node, tensor)
    if decoded and not any(n.domain == DOMAIN for n in ir.traversal.RecursiveGraphIterator(model.graph)):
        model.opset_imports.pop(DOMAIN, None)
    return len(decoded)


def _decode(node: ir.Node) -> ir.Tensor:
    name = node.outputs[0].name or node.name or "?"
    where = f"packed tensor '{name}' (node '{node.name}')"
    if len(node.inputs) != 2 or any(v is None or v.const_value is None for v in node.inputs):
        raise DataError(f"{where}: DecodeWeights needs a constant blob and a constant table to be decoded at load")
    blob = node.inputs[0].const_value.numpy()  # type: ignore[union-attr]
    table = node.inputs[1].const_value.numpy()  # type: ignore[union-attr]
    shape_attr = node.attributes.get("shape")
    if shape_attr is None:
        raise DataError(f"{where}: DecodeWeights has no 'shape' attribute")
    shape = tuple(int(d) for d in shape_attr.as_ints())
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise DataError(f"{where}: the blob must be a 1-D uint8 tensor, got {blob.dtype} {blob.shape}")
    values = _decode_values(blob, table, shape, where)
    stored = node.attributes.get(STORED_AS)
    if stored is not None:
        target = _NARROW.get(stored.as_string())
        if target is None:
            raise DataError(f"{where}: unknown {STORED_AS}={stored.as_string()!r}", hint="uint4 or int4")
        low, high = (0, 15) if target == ir.DataType.UINT4 else (-8, 7)
        if values.size and (values.min() < low or values.max() > high):
            raise DataError(f"{where}: decoded values fall outside {stored.as_string()}")
        values = values.astype(target.numpy())
    return ir.tensor(values, name=name)


def _decode_values(blob: np.ndarray, table: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    from onnxpress import kernels

    if kernels.available().ok:
        from onnxpress.kernels.formats import decode

        return decode(blob, table, shape, name=where)
    from onnxpress.kernels.reference import decode_weights

    logger.warning("%s: the onnxpress kernels are not built (%s); decoding in pure Python (slow)", where,
                   kernels.available().reason)
    try:
        return decode_weights(blob.tobytes(), table, shape)
    except (ValueError, IndexError) as err:
        raise DataError(f"{where}: {err}") from err


def _replace(node: ir.Node, tensor: ir.Tensor) -> None:
    graph = node.graph
    assert graph is not None
    old = node.outputs[0]
    name = old.name
    old.name = None
    value = ir.Value(name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    old.replace_all_uses_with(value, replace_graph_outputs=True)
    inputs = list(node.inputs)
    graph.remove(node, safe=True)
    for input_value in inputs:  # the blob and the table, unless something else reads them
        if input_value is not None and not input_value.uses() and input_value.name in graph.initializers:
            graph.initializers.pop(input_value.name)
