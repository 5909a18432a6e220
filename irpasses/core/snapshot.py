"""Cheap copies of a model for comparisons after passes run (tensors shared, graph structure copied)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable

import onnx_ir as ir
from onnx_ir import external_data


def snapshot(model: ir.Model) -> ir.Model:
    """A structural copy sharing tensors; works on unsorted graphs too (onnx-ir's clone needs sorted ones)."""
    try:
        return model.clone()
    except (ValueError, RuntimeError):
        copy = ir.serde.deserialize_model(ir.to_proto(model))
        for value in model.graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                external_data.set_base_dir(copy.graph, value.const_value.base_dir)
                break
        return copy


def with_placeholders(model: ir.Model, names: Iterable[str]) -> ir.Model:
    """A cheap copy whose named initializers are external-data placeholders (a location, nothing read or
    copied), so its protobuf is the graph without those weights: for onnx.checker, and for onnxruntime when
    the arrays are handed over separately."""
    clone = snapshot(model)
    for number, name in enumerate(names):
        value = clone.graph.initializers[name]
        tensor = value.const_value
        value.const_value = ir.ExternalTensor(
            location=f"onnxpress-placeholder/{number}", offset=0, length=tensor.nbytes, dtype=tensor.dtype,
            shape=tensor.shape, name=name, base_dir=tempfile.gettempdir(),
        )
    return clone


def weightless(model: ir.Model, min_bytes: int = 1024) -> ir.Model:
    """A structural copy whose weights of ``min_bytes`` or more are typed graph inputs instead: what onnx's
    checker and shape inference need, at a fraction of the proto's size (the checker wants external data as
    real files, so placeholders will not do)."""
    copy = snapshot(model)
    for name in [n for n, v in copy.graph.initializers.items() if v.const_value is not None and v.const_value.nbytes >= min_bytes]:
        value = copy.graph.initializers.pop(name)
        tensor = value.const_value
        value.type, value.shape = ir.TensorType(tensor.dtype), ir.Shape(tensor.shape)
        value.const_value = None
        if not value.is_graph_input():
            copy.graph.inputs.append(value)
    return copy

