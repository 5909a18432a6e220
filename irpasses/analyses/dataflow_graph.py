"""A cached networkx view of the dataflow (node -> node edges), for passes that need graph algorithms."""

from __future__ import annotations

import networkx as nx
import onnx_ir as ir
from onnxpress.irpasses.core.analysis import Analysis
from onnxpress.irpasses.core.context import PassContext


class DataflowGraph(Analysis[nx.DiGraph]):
    """Nodes are ``ir.Node`` objects; an edge carries the value name as ``value``. Built once, kept while valid."""

    name = "dataflow-graph"

    @classmethod
    def compute(cls, model: ir.Model, ctx: PassContext) -> nx.DiGraph:
        graph = nx.DiGraph()
        for node in model.graph:
            graph.add_node(node)
            for value in node.inputs:
                producer = value.producer() if value is not None else None
                if producer is not None and producer.graph is model.graph:
                    graph.add_edge(producer, node, value=value.name)
        return graph
