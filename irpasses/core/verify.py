"""Cheap structural verification run after every pass (O(nodes + edges); ~10 ms at 12k nodes).

It checks what a broken rewrite typically leaves behind: a use of a value whose producer is no longer in
the graph, a use before definition, an undefined graph output, two values with one name.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Iterator

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


INPUT_PROBLEMS = "onnxpress.input_problems"
"""``model.meta`` key: the structural problems a model loaded with ``allow_invalid=True`` already had."""


def model_problems(model: ir.Model) -> list[str]:
    """Structural problems of the main graph and of every function."""
    problems = verification_problems(model.graph)
    for function in model.functions.values():
        problems.extend(f"in function {function.name}: {p}" for p in verification_problems(function))
    return problems


def verify_model(model: ir.Model, pass_name: str | None = None) -> None:
    """Raise VerificationError naming the pass and the first problems found. Problems the input already had
    (loaded with ``allow_invalid=True``) are not the pass's doing and are not reported."""
    known = set(model.meta.get(INPUT_PROBLEMS) or ())
    problems = [p for p in model_problems(model) if p not in known]
    if problems:
        where = f"after pass '{pass_name}'" if pass_name else "in the model"
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise VerificationError(f"invalid graph {where}: {shown}", pass_name=pass_name)


@contextlib.contextmanager
def onnx_ir_logs() -> Iterator[list[str]]:
    """Collect what onnx-ir logs (it warns about invalid models through ``logging``; with no handler set up,
    Python prints those records straight to stderr) so the caller can turn them into an error or a warning.
    Distinct messages only: onnx-ir repeats one per node."""
    collected: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message not in collected:
                collected.append(message)

    logger = logging.getLogger("onnx_ir")
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers = [_Collect(logging.WARNING)]
    logger.propagate = False
    try:
        yield collected
    finally:
        logger.handlers = handlers
        logger.propagate = propagate


class _AsWarning(logging.Handler):
    """onnx-ir warns through ``logging``; with no handler configured Python prints that straight to stderr,
    past ``warnings`` filters and the CLI's one-line format. This turns each record into a Python warning."""

    def emit(self, record: logging.LogRecord) -> None:
        warnings.warn(f"onnx-ir: {record.getMessage()}", stacklevel=2)


def route_onnx_ir_logs() -> None:
    """Install the handler once (idempotent): called when onnxpress is imported."""
    logger = logging.getLogger("onnx_ir")
    if not any(isinstance(h, _AsWarning) for h in logger.handlers):
        logger.addHandler(_AsWarning(logging.WARNING))


route_onnx_ir_logs()


def warn_onnx_ir(messages: list[str], where: str, limit: int = 3) -> None:
    """Re-issue onnx-ir's log messages as one Python warning (shown once per CLI run, filterable)."""
    if messages:
        shown = "; ".join(m.strip() for m in messages[:limit]) + (f" (and {len(messages) - limit} more)" if len(messages) > limit else "")
        warnings.warn(f"onnx-ir, {where}: {shown}", stacklevel=3)
