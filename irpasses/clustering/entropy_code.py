"""entropy-code: integer weight tensors (cluster codes, int8 weights) stored as rANS blobs that an
``onnxpress.DecodeWeights`` node turns back into the same tensor.

Lossless: the decoded tensor is bit-identical, so the model computes exactly what it did. A tensor is packed
only where every reader is a standard op (a custom kernel reading its weight at session creation needs a
constant there) and the blob saves at least ``min_saving`` of its stored bytes: k-means codes are close to
uniform (MiniLM's 4-bit codes: 3.90 bits of entropy), so the gain comes from quantizers that leave rare
codes (``cluster{grid=uniform}``, pruned zeros, int8 weights). Symbols are the values minus the tensor's
smallest, and the table maps them back, so int8 and 4-bit codes use the same 8-bit coder.

onnxpress decodes packed weights when it loads a model (``kernels/packed.py``); raw onnxruntime can run the
file with the kernel library registered, decoding once per session but copying the tensor out each run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.quant.qparams import add_constant

_EIGHT_BIT = {ir.DataType.UINT8: np.uint8, ir.DataType.INT8: np.int8}
_FOUR_BIT = {ir.DataType.UINT4: (np.uint8, "uint4"), ir.DataType.INT4: (np.int8, "int4")}
_STANDARD = ("", "ai.onnx")


@dataclasses.dataclass
class EntropyCode(Pass):
    """Pack integer weight tensors into rANS blobs decoded by onnxpress.DecodeWeights (lossless)."""

    name = "entropy-code"
    min_elements: int = 4096
    min_saving: float = 0.03
    """A tensor stays as it is unless its blob is at least this much smaller than its stored bytes."""
    ways: int = 4
    """Interleaved rANS states: 4 decodes fastest on one core here (427 M symbols/s against 294 for 8)."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_saving < 1:
            raise PassOptionError(f"entropy-code: min_saving={self.min_saving} must be in [0, 1)")
        if self.ways not in (1, 2, 4, 8, 16, 32):
            raise PassOptionError(f"entropy-code: ways={self.ways} must be 1, 2, 4, 8, 16 or 32")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        from onnxpress import kernels

        if not kernels.available().ok:
            raise PassOptionError(f"entropy-code needs the onnxpress kernels (the rANS coder): {kernels.available().reason}",
                                  hint="python -m onnxpress.kernels build")
        candidates = [(graph, value) for graph in _graphs(model) for value in list(graph.initializers.values())
                      if self._packable(value)]
        before = after = packed = 0
        with ctx.progress("entropy coding", len(candidates)) as bar:
            for graph, value in candidates:
                stored, blob, low, high = self._blob(value)
                bar.advance()
                if len(blob) > (1 - self.min_saving) * stored:
                    continue
                self._replace(graph, value, blob, low, high)
                before += stored
                after += len(blob)
                packed += 1
        if packed:
            model.opset_imports.setdefault(kernels.DOMAIN, 1)
        return self.result(model, packed > 0, tensors=packed, skipped=len(candidates) - packed, bytes_before=before,
                           bytes_after=after, saving_percent=round(100 * (1 - after / before), 1) if before else 0)

    def _packable(self, value: ir.Value) -> bool:
        tensor = value.const_value
        if tensor is None or value.is_graph_input() or value.is_graph_output() or tensor.size < self.min_elements:
            return False
        uses = [node for node, _ in value.uses()]
        if not uses or any(node.domain not in _STANDARD for node in uses):
            return False
        if tensor.dtype in _FOUR_BIT:  # decoded as 8-bit: only a Cast reads 8 bits as it read 4
            return all(node.op_type == "Cast" for node in uses)
        return tensor.dtype in _EIGHT_BIT

    def _blob(self, value: ir.Value) -> tuple[int, bytes, int, int]:
        """(stored bytes, blob, smallest value, largest value) of an integer tensor."""
        from onnxpress.kernels.formats import encode

        tensor = value.const_value
        assert tensor is not None
        data = tensor.numpy().astype(np.int16)
        low, high = int(data.min()), int(data.max())
        stored = (tensor.size + 1) // 2 if tensor.dtype in _FOUR_BIT else tensor.size
        return stored, encode((data - low).astype(np.uint8), high - low + 1, ways=self.ways), low, high

    def _replace(self, graph: ir.Graph, value: ir.Value, blob: bytes, low: int, high: int) -> None:
        from onnxpress.kernels import DOMAIN
        from onnxpress.kernels.packed import OP, STORED_AS

        tensor = value.const_value
        assert tensor is not None and value.name is not None
        out_type, narrow = _FOUR_BIT.get(tensor.dtype, (_EIGHT_BIT.get(tensor.dtype), None))
        name = value.name
        blob_value = add_constant(graph, f"{name}_opxw", np.frombuffer(blob, dtype=np.uint8))
        table = add_constant(graph, f"{name}_opxw_table", np.arange(low, high + 1).astype(out_type))
        attributes = [ir.AttrInt64s("shape", list(tensor.shape.numpy()))]
        if narrow:
            attributes.append(ir.AttrString(STORED_AS, narrow))
        node = ir.Node(DOMAIN, OP, [blob_value, table], attributes=attributes, name=f"{name}_decode")
        graph.initializers.pop(name)
        value.replace_all_uses_with(node.outputs[0])
        out = node.outputs[0]
        out.name, out.dtype, out.shape = name, ir.DataType.from_numpy(np.dtype(out_type)), ir.Shape(tensor.shape)
        first = next(iter(graph), None)
        if first is None:
            graph.append(node)
        else:
            graph.insert_before(first, node)


def _graphs(model: ir.Model) -> list[ir.Graph]:
    graphs = [model.graph]
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for attribute in node.attributes.values():
            if attribute.type == ir.AttributeType.GRAPH:
                graphs.append(attribute.as_graph())
            elif attribute.type == ir.AttributeType.GRAPHS:
                graphs.extend(attribute.as_graphs())
    return graphs
