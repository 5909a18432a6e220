"""remove-identity: drop Identity nodes (kept only where a graph input feeds a graph output directly)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnx_ir.passes import common

from onnxpress.irpasses.cleanup.adapter import OnnxIrPass
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, SHAPES_INFERRED, TOPO_SORTED


@dataclasses.dataclass
class RemoveIdentity(OnnxIrPass):
    """Drop Identity nodes, renaming values where an Identity fed a graph output."""

    name = "remove-identity"
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED})
    required = False

    def make(self) -> ir.passes.PassBase:
        return common.IdentityEliminationPass()
