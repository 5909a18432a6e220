"""set-ir-version: cap the model's IR version for a runtime (onnx 1.23 writes 14; onnxruntime 1.31 reads <= 13)."""

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
class SetIrVersion(Pass):
    """Lower the IR version stamp to at most ``max`` (a legalization step for a backend)."""

    name = "set-ir-version"
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED})
    max: int = 13

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        if model.ir_version <= self.max:
            return self.result(model, False)
        model.ir_version = self.max
        return self.result(model, True)
