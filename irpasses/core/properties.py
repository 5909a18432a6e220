"""Named facts about a graph that passes need or establish (compiler-style pre/post-conditions).

A property may carry a cheap ``holds`` check; the pass manager uses it to learn which facts hold on
the input model, and a registered *provider* pass to establish a missing fact before a pass that needs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import onnx_ir as ir


@dataclasses.dataclass(frozen=True)
class Property:
    name: str
    doc: str = dataclasses.field(default="", compare=False)
    holds: Callable[[ir.Model], bool] | None = dataclasses.field(default=None, compare=False, repr=False)
    provider: str | None = dataclasses.field(default=None, compare=False)
    """Name of the pass that establishes this property, inserted automatically when missing."""

    def __str__(self) -> str:
        return self.name


def _is_topo_sorted(model: ir.Model) -> bool:
    from onnxpress.irpasses.core.verify import first_use_before_def

    return first_use_before_def(model.graph) is None


def _has_no_constant_nodes(model: ir.Model) -> bool:
    """Constant nodes remain only where they produce a graph output (those cannot become initializers)."""
    return not any(
        node.op_type == "Constant" and node.domain in ("", "ai.onnx") and not node.outputs[0].is_graph_output()
        for node in model.graph
    )


TOPO_SORTED = Property(
    "topo-sorted", "every node comes after the producers of its inputs", _is_topo_sorted, "topo-sort"
)
SHAPES_INFERRED = Property("shapes-inferred", "value types and shapes filled by ONNX shape inference", None, "infer-shapes")
CONSTANTS_LIFTED = Property(
    "constants-lifted", "no Constant nodes in the main graph: weights are initializers", _has_no_constant_nodes, "lift-constants"
)
CALIBRATED = Property("calibrated", "activation statistics collected on calibration data", None, None)
QDQ_FORM = Property("qdq-form", "quantization expressed as QuantizeLinear/DequantizeLinear pairs", None, None)

ALL_PROPERTIES: tuple[Property, ...] = (TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED, CALIBRATED, QDQ_FORM)
