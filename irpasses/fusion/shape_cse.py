"""shape-cse: Shape nodes whose inputs have the same static or symbolic shape compute the same value; keep one.

Symbolic dims count as equal only when they carry the same real name ("batch", "seq"): ONNX gives a dim_param
one value throughout a model. Placeholder names that exporters reuse for unrelated dims ("?", "unk__3") and
anonymous dims never match.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, TOPO_SORTED

PLACEHOLDER_PREFIXES = ("?", "unk__", "Unknown", "-1")


def shape_key(value: ir.Value) -> tuple[object, ...] | None:
    """A hashable description of ``value``'s shape if every dim is known by size or by a real name."""
    if value.shape is None:
        return None
    key: list[object] = []
    for dim in value.shape:
        if isinstance(dim, int):
            key.append(dim)
        elif isinstance(dim, ir.SymbolicDim) and dim.value and not str(dim.value).startswith(PLACEHOLDER_PREFIXES):
            key.append(str(dim.value))
        else:
            return None
    return tuple(key)


@dataclasses.dataclass
class ShapeCse(Pass):
    """Merge Shape nodes whose inputs have identical static or named-symbolic shapes."""

    name = "shape-cse"
    keeps = frozenset({TOPO_SORTED, CONSTANTS_LIFTED})
    required = False

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        first: dict[tuple[object, ...], ir.Node] = {}
        merged = 0
        for node in list(model.graph):
            if node.op_type != "Shape" or node.domain not in ("", "ai.onnx") or node.attributes or node.inputs[0] is None:
                continue
            key = shape_key(node.inputs[0])
            if key is None:
                continue
            kept = first.setdefault(key, node)
            if kept is node or node.outputs[0].is_graph_output():
                continue
            node.outputs[0].replace_all_uses_with(kept.outputs[0])
            model.graph.remove(node, safe=True)
            merged += 1
        return self.result(model, merged > 0, shapes_merged=merged)
