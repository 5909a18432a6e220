"""anonymize-dims: make placeholder dimension names ("?", -1) anonymous dynamic dims.

paddle2onnx writes both spatial dims of an input as dim_param "?" (and batch as dim_value -1). Runtimes
that treat equal names as equal sizes (TensorRT does) then force height == width; an anonymous dim does not.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, TOPO_SORTED

PLACEHOLDERS = frozenset({"?", "-1", "None", "unk", ""})


def _anonymized(shape: ir.Shape) -> ir.Shape | None:
    dims = list(shape.dims)
    changed = False
    for i, dim in enumerate(dims):
        if isinstance(dim, int) and dim < 0 or isinstance(dim, ir.SymbolicDim) and dim.value in PLACEHOLDERS:
            dims[i] = None
            changed = True
    return ir.Shape(dims) if changed else None


@dataclasses.dataclass
class AnonymizeDims(Pass):
    """Turn placeholder dim names ('?', -1) on graph inputs and outputs into anonymous dynamic dims."""

    name = "anonymize-dims"
    keeps = frozenset({TOPO_SORTED, CONSTANTS_LIFTED})

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        count = 0
        for value in [*model.graph.inputs, *model.graph.outputs]:
            if value.shape is not None and (shape := _anonymized(value.shape)) is not None:
                value.shape = shape
                count += 1
        return self.result(model, count > 0, values_changed=count)
