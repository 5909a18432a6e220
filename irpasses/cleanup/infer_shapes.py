"""infer-shapes: ONNX shape inference (weights left out of the proto, so it works past 2 GB)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnx_ir.passes import common
from onnxpress.irpasses.cleanup.adapter import OnnxIrPass
from onnxpress.irpasses.core.properties import (
    CONSTANTS_LIFTED,
    SHAPES_INFERRED,
    TOPO_SORTED,
)


@dataclasses.dataclass
class InferShapes(OnnxIrPass):
    """Fill value types and shapes with ONNX shape inference."""

    name = "infer-shapes"
    provides = frozenset({SHAPES_INFERRED})
    keeps = frozenset({TOPO_SORTED, CONSTANTS_LIFTED})
    data_prop: bool = True

    def make(self) -> ir.passes.PassBase:
        return common.ShapeInferencePass(data_prop=self.data_prop)
