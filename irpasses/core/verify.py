"""Cheap structural verification run after every pass (O(nodes + edges); ~10 ms at 12k nodes).

It checks what a broken rewrite typically leaves behind: a use of a value whose producer is no longer in
the graph, a use before definition, an undefined graph output, two values with one name.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx_ir as ir
from onnxpress.irpasses.core.errors import VerificationError


def node_label(node: ir.Node) -> str:
    return f"{node.op_type} node '{node.name or '<unnamed>'}'"


def subgraphs(node: ir.Node) -> Iterable[ir.Graph]:
    """The graphs a node's attributes hold (If branches, Loop/Scan bodies)."""
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.as_graph()
        elif attr.type == ir.AttributeType.GRAPHS:
            yield from attr.as_graphs()


def first_use_before_def(graph: ir.Graph | ir.Function) -> tuple[ir.Node, ir.Value] | None:
    """The first (node, input) whose producer comes later in the node order, or None if sorted."""
    seen: set[int] = set()
    members = {id(n) for n in graph}
    for node in graph:
        for value in node.inputs:
            if value is None:
                continue
            producer = value.producer()
            if producer is not None and id(producer) in members and id(producer) not in seen:
                return node, value
        seen.add(id(node))
    return None


def verification_problems(graph: ir.Graph | ir.Function, outer: frozenset[int] = frozenset(), limit: int = 20) -> list[str]:
    """List structural problems of ``graph`` (and its subgraphs); empty when the graph is well formed.

    ``outer`` holds ids of values visible from enclosing graphs (for If/Loop/Scan bodies).
    """
    problems: list[str] = []
    defined: set[int] = set(outer)
    names: dict[str, str] = {}

    def define(value: ir.Value, what: str) -> None:
        defined.add(id(value))
        if value.name:
            if value.name in names and len(problems) < limit:
                problems.append(f"value name '{value.name}' is defined twice ({names[value.name]} and {what})")
            names.setdefault(value.name, what)

    for value in graph.inputs:
        define(value, "graph input")
    if isinstance(graph, ir.Graph):
        for name, value in graph.initializers.items():
            if id(value) not in defined:
                define(value, "initializer")
            if value.name != name and len(problems) < limit:
                problems.append(f"initializer registered as '{name}' but its value is named '{value.name}'")

    for node in graph:
        for index, value in enumerate(node.inputs):
            if value is None or id(value) in defined:
                continue
            producer = value.producer()
            if producer is None:
                why = "is neither a graph input, an initializer nor produced by any node"
            elif producer.graph is not graph and id(value) not in outer:
                why = f"is produced by {node_label(producer)}, which is no longer in the graph"
            else:
                why = f"is used before {node_label(producer)} defines it (graph not topologically sorted, or a cycle)"
            problems.append(f"input {index} ('{value.name}') of {node_label(node)} {why}")
            if len(problems) >= limit:
                return problems
        visible = frozenset(defined)
        for sub in subgraphs(node):
            problems.extend(f"in a subgraph of {node_label(node)}: {p}" for p in verification_problems(sub, visible, limit))
        for value in node.outputs:
            define(value, f"output of {node_label(node)}")

    for value in graph.outputs:
        if id(value) not in defined:
            problems.append(f"graph output '{value.name}' is not defined by any node, input or initializer")
    return problems[:limit]


def verify_model(model: ir.Model, pass_name: str | None = None) -> None:
    """Raise VerificationError naming the pass and the first problems found."""
    problems = verification_problems(model.graph)
    for function in model.functions.values():
        problems.extend(f"in function {function.name}: {p}" for p in verification_problems(function))
    if problems:
        where = f"after pass '{pass_name}'" if pass_name else "in the model"
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise VerificationError(f"invalid graph {where}: {shown}", pass_name=pass_name)
