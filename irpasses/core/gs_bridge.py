"""graphsurgeon: run a user's ``fn(gs.Graph)`` inside a pipeline, so existing GraphSurgeon scripts plug in.

The model crosses as a protobuf: weights already on disk stay external references (only in-memory weights
are copied). Passes that rewrite large weights belong on onnx-ir, not behind this bridge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import onnx_ir as ir
from onnx_ir import external_data
from onnxpress.irpasses.core.callables import resolve_callable
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult


def _base_dir(model: ir.Model) -> str | None:
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            return tensor.base_dir
    return None


@dataclasses.dataclass
class GraphSurgeonPass(Pass):
    """Run a GraphSurgeon function fn(graph) -> graph|None on the model (fn='module:function')."""

    name = "graphsurgeon"
    fn: str = ""
    func: Callable[[Any], Any] | None = dataclasses.field(default=None, repr=False, compare=False, metadata={"python_only": True})

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        import onnx_graphsurgeon as gs

        fn = self.func or (resolve_callable(self.fn, f"graphsurgeon fn={self.fn!r}") if self.fn else None)
        if fn is None:
            raise PassOptionError("graphsurgeon needs fn='module:function' (or func= from Python)")
        base_dir = _base_dir(model)
        before = ir.to_proto(model)
        graph = gs.import_onnx(before)
        returned = fn(graph)
        graph = returned if isinstance(returned, gs.Graph) else graph
        after = gs.export_onnx(graph)
        after.ir_version = before.ir_version
        after.ClearField("metadata_props")
        after.metadata_props.extend(before.metadata_props)
        changed = after.graph.SerializeToString() != before.graph.SerializeToString()
        if changed:
            new = ir.serde.deserialize_model(after)
            if base_dir is not None:
                external_data.set_base_dir(new.graph, base_dir)
            model.graph = new.graph  # opset imports live on the graph in onnx-ir
        return self.result(model, changed)


def graphsurgeon(func: Callable[[Any], Any]) -> GraphSurgeonPass:
    """Wrap a Python GraphSurgeon function as a pass: ``PassManager([graphsurgeon(my_fn)])``."""
    return GraphSurgeonPass(fn=getattr(func, "__qualname__", "python"), func=func)

