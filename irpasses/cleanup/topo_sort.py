"""topo-sort: stable topological order; a cycle is reported naming the nodes on it."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import InvalidModelError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import (
    CONSTANTS_LIFTED,
    SHAPES_INFERRED,
    TOPO_SORTED,
)
from onnxpress.irpasses.core.verify import first_use_before_def, node_label


def find_cycle(graph: ir.Graph | ir.Function) -> list[ir.Node] | None:
    """Nodes on one dependency cycle of ``graph``, or None."""
    import networkx as nx  # only when the order is wrong: importing it costs every CLI run ~0.1 s

    dg = nx.DiGraph()
    members = {id(n): n for n in graph}
    for node in graph:
        dg.add_node(id(node))
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None and id(producer) in members:
                dg.add_edge(id(producer), id(node))
    try:
        edges = nx.find_cycle(dg)
    except nx.NetworkXNoCycle:
        return None
    return [members[u] for u, _ in edges]


def sort_or_explain(graph: ir.Graph | ir.Function, where: str = "graph") -> bool:
    """Sort ``graph`` in place; return whether the order changed. Raise InvalidModelError on a cycle."""
    if first_use_before_def(graph) is None:
        return False
    cycle = find_cycle(graph)
    if cycle is not None:
        path = " -> ".join(node_label(n) for n in cycle[:6]) + (" -> ..." if len(cycle) > 6 else "")
        raise InvalidModelError(f"the {where} has a cycle: {path} -> back to the first", hint="an ONNX graph must be acyclic")
    graph.sort()
    return True


@dataclasses.dataclass
class TopoSort(Pass):
    """Order nodes so every node follows the producers of its inputs (stable)."""

    name = "topo-sort"
    provides = frozenset({TOPO_SORTED})
    keeps = frozenset({SHAPES_INFERRED, CONSTANTS_LIFTED})

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        changed = sort_or_explain(model.graph)
        for function in model.functions.values():
            changed |= sort_or_explain(function, f"function '{function.name}'")
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.graph is not model.graph and node.graph is not None and first_use_before_def(node.graph) is not None:
                changed |= sort_or_explain(node.graph, f"subgraph of {node_label(node)}")
        return self.result(model, changed)
