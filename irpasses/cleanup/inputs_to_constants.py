"""inputs-to-constants: graph inputs that have an initializer become plain constants.

Models written at IR version 3 list every initializer among the graph inputs (a default a caller could
override), which hides the weights from constant folding and fusion. This drops those inputs, so the model
keeps only its real inputs, and stamps IR version 4 or later, where that is valid ONNX. Like onnxsim and
onnxslim do by default; leave the pass out to keep weights overridable.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import (
    CONSTANTS_LIFTED,
    SHAPES_INFERRED,
    TOPO_SORTED,
)


@dataclasses.dataclass
class InputsToConstants(Pass):
    """Drop graph inputs backed by initializers (IR 3 style), treating those weights as constants."""

    name = "inputs-to-constants"
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED})

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        initializers = model.graph.initializers
        backed = [v for v in model.graph.inputs if v.name in initializers]
        if not backed:
            return self.result(model, False)
        for value in backed:
            model.graph.inputs.remove(value)
        model.ir_version = max(model.ir_version, 4)
        return self.result(model, True, inputs_removed=len(backed))
