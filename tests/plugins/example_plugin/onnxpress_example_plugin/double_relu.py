"""Relu(Relu(x)) == Relu(x): the second Relu's users read the first one's output."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core import TOPO_SORTED, Pass, PassContext, PassResult


@dataclasses.dataclass
class FoldDoubleRelu(Pass):
    """Fold Relu(Relu(x)) into one Relu (example vendor pass)."""

    name = "fold-double-relu"
    keeps = frozenset({TOPO_SORTED})

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        folded = 0
        for node in list(model.graph):
            if node.op_type != "Relu" or node.inputs[0] is None:
                continue
            inner = node.inputs[0].producer()
            if inner is None or inner.op_type != "Relu" or node.outputs[0].is_graph_output():
                continue
            node.outputs[0].replace_all_uses_with(inner.outputs[0])
            model.graph.remove(node, safe=True)
            folded += 1
        return self.result(model, folded > 0, folded=folded)
