"""lift-constants: turn Constant nodes into initializers (paddle2onnx keeps every weight in Constant nodes)."""

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
class LiftConstants(OnnxIrPass):
    """Turn Constant nodes into initializers so weight passes and quantizers see them."""

    name = "lift-constants"
    provides = frozenset({CONSTANTS_LIFTED})
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED})
    min_elements: int = 0
    """Constants with fewer elements stay nodes."""

    def make(self) -> ir.passes.PassBase:
        return common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=self.min_elements)
