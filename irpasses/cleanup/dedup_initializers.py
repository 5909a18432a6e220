"""dedup-initializers: share initializers with identical dtype, shape and bytes."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnx_ir.passes import common

from onnxpress.irpasses.cleanup.adapter import OnnxIrPass
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, SHAPES_INFERRED, TOPO_SORTED


@dataclasses.dataclass
class DedupInitializers(OnnxIrPass):
    """Share initializers whose dtype, shape and bytes are identical (compared by hash, then bytes)."""

    name = "dedup-initializers"
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED})
    required = False
    max_bytes: int = 1 << 30

    def make(self) -> ir.passes.PassBase:
        return common.DeduplicateHashedInitializersPass(size_limit=self.max_bytes)
