"""Adapter that exposes one of onnx-ir's common passes under an onnxpress name and contract."""

from __future__ import annotations

from typing import ClassVar

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.pass_base import Pass, PassResult


class OnnxIrPass(Pass):
    """Subclasses implement ``make()`` returning the onnx-ir pass configured from their options."""

    stat_name: ClassVar[str] = "changed"

    def make(self) -> ir.passes.PassBase:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        nodes_before = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
        inits_before = len(model.graph.initializers)
        inner = self.make()(model)
        nodes_after = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
        inits_delta = len(model.graph.initializers) - inits_before
        stats = {
            "nodes_removed": nodes_before - nodes_after,
            "initializers_added": max(inits_delta, 0),
            "initializers_removed": max(-inits_delta, 0),
        }
        return self.result(model, inner.modified, **stats)
