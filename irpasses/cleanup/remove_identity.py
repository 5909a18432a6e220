"""remove-identity: drop Identity nodes wherever that keeps every graph's outputs intact.

Written here rather than wrapping onnx-ir 1.1's IdentityEliminationPass, which the ONNX conformance cases
showed to be wrong in subgraphs: it renames an outer-scope value into a branch output (ORT rejects
test_affine_grid_*_expanded) and merges two outputs of a Scan body into one value (test_scan_sum changes).
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


def _outputs_of(graph: ir.Graph | ir.Function) -> list[ir.Value]:
    return list(graph.outputs)


def try_remove_identity(node: ir.Node) -> bool:
    """Remove one Identity node if safe; return whether it was removed."""
    if node.op_type != "Identity" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 1 or len(node.outputs) != 1:
        return False
    source, result = node.inputs[0], node.outputs[0]
    graph = node.graph
    if source is None or graph is None:
        return False
    outputs = _outputs_of(graph)
    if any(out is result for out in outputs):
        # The Identity names a graph output. Only a value computed by a node of this same graph, that is
        # not itself an input, initializer or another output of the graph, can take over that name.
        producer = source.producer()
        if producer is None or producer.graph is not graph:
            return False
        if source.is_graph_input() or source.is_initializer() or any(out is source for out in outputs):
            return False
        if source.type is None:  # the output keeps the type and shape it declared
            source.type = result.type
        if source.shape is None:
            source.shape = result.shape
        ir.convenience.replace_all_uses_with(result, source, replace_graph_outputs=True)
        source.name = result.name
    else:
        ir.convenience.replace_all_uses_with(result, source)
    graph.remove(node, safe=True)
    return True


@dataclasses.dataclass
class RemoveIdentity(Pass):
    """Drop Identity nodes, renaming a value when an Identity fed a graph output."""

    name = "remove-identity"
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED})
    required = False

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        removed = 0
        graphs: list[ir.Graph | ir.Function] = [model.graph, *model.functions.values()]
        for graph in graphs:
            for node in list(ir.traversal.RecursiveGraphIterator(graph)):
                removed += try_remove_identity(node)
        return self.result(model, removed > 0, nodes_removed=removed)
