"""cse: merge nodes that compute the same thing from the same inputs."""

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
class CommonSubexpressions(OnnxIrPass):
    """Merge nodes with the same op, attributes and inputs (small Constants compared by value)."""

    name = "cse"
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED})
    required = False
    max_constant_elements: int = 10

    def make(self) -> ir.passes.PassBase:
        return common.CommonSubexpressionEliminationPass(size_limit=self.max_constant_elements)
