"""Topological stages of a set of layers, for passes that recalibrate layer by layer (``prune{sequential}``,
``lowrank{sequential}``): a stage's layers do not feed each other, so one calibration pass over the model with
the earlier stages rewritten measures all their inputs."""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir


def layer_stages(model: ir.Model, layers: Sequence[ir.Node]) -> list[list[int]]:
    """Indices into ``layers`` grouped by stage, in order: a layer's stage is 1 + the latest stage of a layer
    upstream of its inputs (1 when there is none). Nodes are visited in graph order, which ONNX keeps
    topological, bodies included; a value produced in a body seen later counts as a graph input."""
    index = {id(node): i for i, node in enumerate(layers)}
    depth: dict[int, int] = {}
    level = [0] * len(layers)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        upstream = max((depth.get(id(v), 0) for v in node.inputs if v is not None), default=0)
        if id(node) in index:
            upstream += 1
            level[index[id(node)]] = upstream
        for value in node.outputs:
            depth[id(value)] = upstream
    grouped: dict[int, list[int]] = {}
    for i, stage in enumerate(level):
        grouped.setdefault(stage, []).append(i)
    return [grouped[k] for k in sorted(grouped)]
