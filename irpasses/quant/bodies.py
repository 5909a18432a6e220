"""Values inside If/Loop/Scan bodies, made visible to calibration runs.

onnxruntime returns a graph's outputs only, and a body's intermediate values are not outputs of the main
graph, so the passes that need activation statistics could not quantize layers that sit in bodies (silero-vad
keeps its whole network in an If). In a structural copy of the model, each wanted body value is threaded out
as one more output of the node that owns its body, and of that node's owners up to the main graph:

- If: the branch holding the value outputs it (through an Identity); the other branch outputs an empty tensor
  of the same type, so a sample that takes that branch contributes nothing;
- Loop / Scan: the body outputs it as one more scan output, so the node returns every iteration's value
  stacked on a new leading axis; the reader folds that axis into the batch axis (``fold``).

A value below an If that is itself inside a Loop/Scan body is not reachable this way (iterations that take
the other branch would stack an empty tensor with full ones); ``reachable`` tells the passes so they leave
such layers float and say why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.verify import subgraphs

_LOOPS = frozenset({"Loop", "Scan"})


def owners(model: ir.Model) -> dict[int, ir.Node]:
    """id(body graph) -> the node whose attribute holds it, for every body at any depth."""
    found: dict[int, ir.Node] = {}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for graph in subgraphs(node):
            found[id(graph)] = node
    return found


def shared_names(model: ir.Model) -> set[str]:
    """Value names given to more than one value across the main graph and its bodies (sibling branches may
    reuse a name): statistics are kept by name, so layers reading or writing such values would mix them."""
    seen: set[str] = set()
    shared: set[str] = set()
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for value in node.outputs:
            if value.name:
                (shared if value.name in seen else seen).add(value.name)
    return shared


def _chain(value: ir.Value, top: ir.Graph, owned_by: dict[int, ir.Node]) -> list[ir.Node] | None:
    """The owner nodes from ``value``'s body up to the main graph (innermost first); None when one of them
    cannot pass a value out or an If sits below a Loop/Scan."""
    chain: list[ir.Node] = []
    graph = value.graph
    below_if = False
    while graph is not None and graph is not top:
        owner = owned_by.get(id(graph))
        if owner is None or owner.op_type not in ("If", *_LOOPS) or owner.domain not in ("", "ai.onnx"):
            return None
        if owner.op_type in _LOOPS and below_if:
            return None
        below_if = below_if or owner.op_type == "If"
        chain.append(owner)
        graph = owner.graph
    return chain if graph is top else None


def nested(value: ir.Value, model: ir.Model) -> bool:
    """Whether ``value`` lives inside a body (not the main graph and not an outer-scope capture)."""
    return value.graph is not None and value.graph is not model.graph


def reachable(value: ir.Value, model: ir.Model, owned_by: dict[int, ir.Node] | None = None) -> bool:
    """Whether calibration runs can see ``value``: in the main graph, or in bodies ``expose`` can thread out."""
    if not nested(value, model):
        return True
    return _chain(value, model.graph, owned_by if owned_by is not None else owners(model)) is not None


@dataclasses.dataclass
class Exposed:
    """A structural copy of a model whose wanted body values are main-graph outputs of their owners."""

    model: ir.Model
    aliases: dict[str, str]
    """Main-graph name -> the body value's name."""
    stacked: dict[str, int]
    """Main-graph name -> how many Loop/Scan iteration axes lead its arrays."""
    unreachable: list[str]

    def fold(self, name: str, array: np.ndarray) -> np.ndarray | None:
        """The array as the body value's own (iteration axes folded into the first), None when empty (an If
        branch this sample did not take)."""
        array = np.asarray(array)
        if array.size == 0 and name in self.aliases:
            return None
        depth = self.stacked.get(name, 0)
        if depth and array.ndim > depth:
            array = array.reshape(-1, *array.shape[depth + 1 :])
        return array


def _empty_like(value: ir.Value, graph: ir.Graph, name: str) -> ir.Value:
    """A Constant in ``graph`` holding an empty tensor of ``value``'s element type."""
    dtype = value.dtype or ir.DataType.FLOAT
    node = ir.node("Constant", [], attributes={"value": ir.tensor(np.zeros(0, dtype=dtype.numpy()), name=name)}, name=f"{name}_Constant")
    node.outputs[0].name = name
    node.outputs[0].type, node.outputs[0].shape = ir.TensorType(dtype), ir.Shape([0])
    graph.append(node)
    return node.outputs[0]


def _pass_out(owner: ir.Node, inner: ir.Value, name: str) -> ir.Value:
    """Make ``inner`` (a value of one of ``owner``'s bodies) one more output of ``owner``."""
    body = inner.graph
    identity = ir.node("Identity", [inner], name=f"{name}_Identity")
    identity.outputs[0].name = f"{name}_inner"
    identity.outputs[0].type = inner.type
    body.append(identity)
    body.outputs.append(identity.outputs[0])
    if owner.op_type == "If":
        branches = [owner.attributes[k].value for k in ("then_branch", "else_branch") if k in owner.attributes]
        for other in branches:
            if other is not body:
                other.outputs.append(_empty_like(inner, other, f"{name}_empty"))
    elif owner.op_type == "Scan":
        for key in ("scan_output_axes", "scan_output_directions"):
            if key in owner.attributes:
                owner.attributes[key] = ir.AttrInt64s(key, [*owner.attributes[key].value, 0])
    owner.resize_outputs(len(owner.outputs) + 1)
    out = owner.outputs[-1]
    out.name = name
    out.type = inner.type
    return out


def expose(model: ir.Model, names: Iterable[str]) -> Exposed:
    """A structural copy of ``model`` (tensors shared) in which each named body value is a main-graph value
    (see the module docstring); names already in the main graph are left as they are."""
    from onnxpress.irpasses.core.snapshot import snapshot

    copy = snapshot(model)
    top = copy.graph
    owned_by = owners(copy)
    values: dict[str, ir.Value] = {}
    for node in ir.traversal.RecursiveGraphIterator(top):
        for value in node.outputs:
            if value.name:
                values.setdefault(value.name, value)
        for graph in subgraphs(node):
            for value in graph.inputs:
                if value.name:
                    values.setdefault(value.name, value)
    exposed = Exposed(copy, {}, {}, [])
    for number, name in enumerate(dict.fromkeys(names)):
        value = values.get(name)
        if value is None or not nested(value, copy):
            continue
        chain = _chain(value, top, owned_by)
        if chain is None:
            exposed.unreachable.append(name)
            continue
        current = value
        for level, owner in enumerate(chain):
            current = _pass_out(owner, current, f"onnxpress_calib_{number}_{level}")
        exposed.aliases[current.name] = name
        exposed.stacked[current.name] = sum(owner.op_type in _LOOPS for owner in chain)
    return exposed
