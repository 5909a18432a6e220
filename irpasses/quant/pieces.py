"""Run a model as consecutive pieces, each exposing a bounded share of its intermediate tensors.

Calibration needs intermediate activations. Exposing all of them at once makes onnxruntime hold every one
(PP-OCRv4 det: ~300 MB per page); exposing a chunk at a time re-runs the whole model once per chunk (det: 5
chunks plus size probes = 52 runs for 8 pages, 17 of its 24 s). Pieces give both bounds: each node runs once
per sample, and only one piece's exposed tensors plus the values crossing into later pieces are alive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.verify import subgraphs


@dataclasses.dataclass
class Piece:
    """Nodes ``indices`` (positions in the model's node order) run as one onnxruntime session."""

    indices: list[int]
    exposed: list[str]
    """Wanted tensors this piece produces."""
    reads: list[str] = dataclasses.field(default_factory=list)
    """Values it takes from the sample or from earlier pieces."""
    carries: list[str] = dataclasses.field(default_factory=list)
    """Values it produces that later pieces read."""
    session: Any = None
    weights: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Large initializers fed to the session at every run instead of built into it (see ``piece_model``)."""


def _reads(node: ir.Node, top: ir.Graph) -> list[ir.Value]:
    """Inputs of ``node``, plus top-level values its subgraphs (If/Loop/Scan bodies) capture."""
    values = [v for v in node.inputs if v is not None]
    for graph in subgraphs(node):
        for inner in ir.traversal.RecursiveGraphIterator(graph):
            values.extend(v for v in inner.inputs if v is not None and v.graph is top)
    return values


def _is_constant(value: ir.Value) -> bool:
    return value.is_initializer() or (value.producer() is None and value.const_value is not None)


def plan(
    model: ir.Model, wanted: Sequence[str], sizes: Mapping[str, int] | None = None,
    byte_budget: int | None = None, max_exposed: int | None = None,
) -> list[Piece]:
    """Split the nodes that lead to ``wanted`` into pieces of at most ``max_exposed`` wanted tensors and
    ``byte_budget`` bytes of them (by ``sizes``; a tensor larger than the budget gets a piece of its own)."""
    graph = model.graph
    nodes = list(graph)
    wanted_set = set(wanted)
    needed: set[int] = set()
    live = set(wanted_set)
    for index in range(len(nodes) - 1, -1, -1):  # only ancestors of wanted tensors run
        node = nodes[index]
        if any(v.name in live for v in node.outputs):
            needed.add(index)
            live.update(v.name for v in _reads(node, graph) if v.name)
    pieces: list[Piece] = []
    current: list[int] = []
    exposed: list[str] = []
    used = 0
    for index in sorted(needed):
        produced = [v.name for v in nodes[index].outputs if v.name in wanted_set]
        size = sum((sizes or {}).get(n, 0) for n in produced)
        over_count = max_exposed is not None and len(exposed) + len(produced) > max_exposed
        over_bytes = byte_budget is not None and used + size > byte_budget
        if produced and exposed and (over_count or over_bytes):
            pieces.append(Piece(current, exposed))
            current, exposed, used = [], [], 0
        current.append(index)
        exposed.extend(produced)
        used += size
    if current:
        pieces.append(Piece(current, exposed))
    _link(nodes, graph, pieces)
    return pieces


def _link(nodes: list[ir.Node], graph: ir.Graph, pieces: list[Piece]) -> None:
    """Fill each piece's reads and carries: what crosses piece boundaries."""
    home: dict[str, int] = {}
    for number, piece in enumerate(pieces):
        for index in piece.indices:
            for value in nodes[index].outputs:
                if value.name:
                    home[value.name] = number
    for number, piece in enumerate(pieces):
        reads: dict[str, None] = {}
        for index in piece.indices:
            for value in _reads(nodes[index], graph):
                if value.name and not _is_constant(value) and home.get(value.name) != number:
                    reads[value.name] = None
        piece.reads = list(reads)
        for name in piece.reads:
            source = home.get(name)
            if source is not None and name not in pieces[source].carries:
                pieces[source].carries.append(name)


FED_WEIGHT_BYTES = 1 << 16


def piece_model(model: ir.Model, piece: Piece, arrays: Mapping[str, np.ndarray]) -> ir.Model:
    """The piece as a model of its own: its reads become graph inputs (typed from ``arrays`` where the
    model does not say), its exposed and carried values its outputs. Only the piece's nodes are cloned (a
    view of them), not the whole model: a 125-node classifier probed in 15 pieces spent 0.3 s cloning.
    Initializers of ``FED_WEIGHT_BYTES`` or more that only standard ops read become graph inputs too, their
    arrays kept in ``piece.weights`` and fed at every run: onnxruntime reads fed arrays in place, while
    building them into the session copies them (twice with pre-packing; MiniLM: +4 MiB per session instead
    of +215)."""
    graph = model.graph
    nodes = list(graph)
    keep = [nodes[i] for i in piece.indices]
    by_name = {v.name: v for v in graph.inputs}
    by_name.update({v.name: v for n in nodes for v in n.outputs if v.name})
    constants = {id(v): v for n in keep for v in _reads(n, graph) if _is_constant(v)}
    produced = {v.name: v for n in keep for v in n.outputs if v.name}
    view = ir.GraphView(
        [by_name[name] for name in piece.reads],
        [produced[n] for n in dict.fromkeys([*piece.exposed, *piece.carries])],
        nodes=keep, initializers=list(constants.values()), opset_imports=dict(graph.opset_imports), name=graph.name,
    )
    clone = view.clone()
    for value in clone.inputs:
        if value.type is None and value.name in arrays:
            value.type = ir.TensorType(ir.DataType.from_numpy(np.asarray(arrays[value.name]).dtype))
    for name in list(clone.initializers):
        value = clone.initializers[name]
        tensor = value.const_value
        standard_readers = all(use.node.domain in ("", "ai.onnx") and use.node.graph is clone for use in value.uses())
        if tensor is None or tensor.nbytes < FED_WEIGHT_BYTES or not standard_readers:
            continue
        piece.weights[name] = tensor.numpy()
        clone.initializers.pop(name)
        value.const_value = None
        clone.inputs.append(value)
    return ir.Model(clone, ir_version=model.ir_version, producer_name=model.producer_name, functions=list(model.functions.values()))


def run(
    model: ir.Model, pieces: list[Piece], sample: Mapping[str, np.ndarray],
    visit: Callable[[str, np.ndarray], None], session_factory: Callable[[ir.Model], Any],
) -> None:
    """Run one sample through the pieces in order, handing each exposed tensor to ``visit``; values a later
    piece reads are kept only until their last reader has run."""
    last_reader: dict[str, int] = {}
    for number, piece in enumerate(pieces):
        for name in piece.reads:
            last_reader[name] = number
    live: dict[str, np.ndarray] = {}
    for number, piece in enumerate(pieces):
        feed = {name: (live[name] if name in live else np.asarray(sample[name])) for name in piece.reads}
        if piece.session is None:
            piece.session = session_factory(piece_model(model, piece, feed))
        feed.update(piece.weights)
        names = [o.name for o in piece.session.get_outputs()]
        exposed = set(piece.exposed)
        for name, array in zip(names, piece.session.run(names, feed)):
            if name in exposed:
                visit(name, array)
            if name in piece.carries:
                live[name] = array
        del feed
        for name in [n for n in live if last_reader.get(n, -1) <= number]:
            del live[name]
