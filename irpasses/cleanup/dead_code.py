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
from onnxpress.irpasses.core.verify import subgraphs


@dataclasses.dataclass
class DeadCode(OnnxIrPass):
    """Remove nodes, initializers, functions and opset imports that no graph output depends on."""

    name = "dead-code"
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED})
    required = False

    def make(self) -> ir.passes.PassBase:
        return ir.passes.Sequential(
            common.RemoveUnusedNodesPass(), RemoveUnusedBodyInitializers(), common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()
        )


class RemoveUnusedBodyInitializers(ir.passes.InPlacePass):
    """Initializers of If/Loop/Scan bodies that nothing reads (onnx-ir's pass clears the main graph's only):
    after constant folding silero-vad's branches kept both the LSTM weights and their folded copies, +0.95 MB
    on a 2.3 MB model."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        # what the nodes read, scanned: ``Value.uses()`` can still list a node that a folding pass took out of
        # its graph without detaching its inputs (seen on silero-vad after fold-constants)
        read = {id(v) for node in ir.traversal.RecursiveGraphIterator(model.graph) for v in node.inputs if v is not None}
        removed = 0
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            for graph in subgraphs(node):
                keep = {id(v) for v in (*graph.inputs, *graph.outputs)}
                for name, value in list(graph.initializers.items()):
                    if id(value) not in read and id(value) not in keep:
                        del graph.initializers[name]
                        removed += 1
        return ir.passes.PassResult(model, modified=bool(removed))


def remove_unused(model: ir.Model) -> bool:
    """Unused nodes and initializers, bodies included: what a rewrite that replaced weights leaves behind."""
    nodes = common.RemoveUnusedNodesPass()(model).modified
    return RemoveUnusedBodyInitializers()(model).modified or nodes
