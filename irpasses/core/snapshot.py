"""Cheap copies of a model for comparisons after passes run (tensors shared, graph structure copied)."""

from __future__ import annotations

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
