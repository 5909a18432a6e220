"""dedup-initializers: share initializers with identical dtype, shape and bytes.

Written here instead of wrapping onnx-ir 1.1's DeduplicateHashedInitializersPass: that one leaves every
external weight's memory map open after hashing, so on a 1.2 GB model the process's resident set grew to
the whole weight file. Here a weight read only for hashing is released again, and only tensors whose
(dtype, shape) occurs more than once are read at all.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import (
    CONSTANTS_LIFTED,
    SHAPES_INFERRED,
    TOPO_SORTED,
)


def _contents(tensor: ir.TensorProtocol) -> bytes | memoryview:
    if tensor.dtype == ir.DataType.STRING or tensor.dtype.bitwidth < 8:
        return tensor.tobytes()
    return memoryview(np.ascontiguousarray(tensor.numpy()).reshape(-1).view(np.uint8))


def _digest(tensor: ir.TensorProtocol) -> str:
    """Hash the tensor's bytes; an external tensor mapped only for this is unmapped afterwards."""
    was_loaded = not isinstance(tensor, ir.ExternalTensor) or tensor.raw is not None
    try:
        return hashlib.blake2b(_contents(tensor), digest_size=32).hexdigest()
    finally:
        if not was_loaded:
            tensor.release()  # type: ignore[union-attr]


def dedup_graph(graph: ir.Graph, max_bytes: int) -> int:
    candidates: dict[tuple[object, tuple[int, ...]], list[ir.Value]] = collections.defaultdict(list)
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is None or value.is_graph_input() or value.is_graph_output() or tensor.nbytes > max_bytes:
            continue
        candidates[(tensor.dtype, tuple(tensor.shape.numpy()))].append(value)
    removed = 0
    for values in candidates.values():
        if len(values) < 2:
            continue
        kept: dict[str, ir.Value] = {}
        for value in values:
            digest = _digest(value.const_value)  # type: ignore[arg-type]
            keep = kept.get(digest)
            if keep is None:
                kept[digest] = value
                continue
            value.replace_all_uses_with(keep)
            assert value.name is not None
            graph.initializers.pop(value.name)
            removed += 1
    return removed


@dataclasses.dataclass
class DedupInitializers(Pass):
    """Share initializers whose dtype, shape and bytes are identical (BLAKE2b digests)."""

    name = "dedup-initializers"
    keeps = frozenset({TOPO_SORTED, SHAPES_INFERRED, CONSTANTS_LIFTED})
    required = False
    max_bytes: int = 1 << 30

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        removed = sum(dedup_graph(graph, self.max_bytes) for graph in model.graphs())
        return self.result(model, removed > 0, initializers_removed=removed)
