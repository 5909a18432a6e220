"""dead-code: remove nodes, initializers, functions and opset imports nothing uses."""

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
class DeadCode(OnnxIrPass):
    """Remove nodes, initializers, functions and opset imports that no graph output depends on."""

    name = "dead-code"
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED})
    required = False

    def make(self) -> ir.passes.PassBase:
        return ir.passes.Sequential(
            common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()
        )
