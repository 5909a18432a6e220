"""fold-constants: evaluate nodes whose inputs are all constant (onnxscript's folder), with size caps.

Also propagates shapes known statically (Shape/Size of values with static dims) so exporter shape chains
(Shape -> Gather -> Unsqueeze -> Concat) collapse into constants where the dims are known.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as common_passes
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.opsets import nodes_problem
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED
from onnxscript.optimizer import _constant_folding, fold_constants_ir


@contextlib.contextmanager
def _forgiving_evaluators(opsets: Mapping[str, int]) -> Iterator[None]:
    """onnxscript 0.7 aborts the whole fold when one op's partial evaluator raises (its SplitToSequence
    evaluator does on the ONNX conformance case test_split_to_sequence_1), and its evaluators write the newest
    form of the ops they emit (Split with a ``split`` input, Unsqueeze with an ``axes`` input, Constant with
    ``value_int``) at any opset. Wrap each evaluator so a failure, or nodes the model's opset does not have,
    leave that node unfolded instead."""
    registry = _constant_folding.registry
    original = registry.lookup_evaluators

    def lookup(domain: str, op_type: str, version: int) -> list[Any]:
        return [_forgiving(e, opsets) for e in original(domain, op_type, version)]

    registry.lookup_evaluators = lookup  # type: ignore[method-assign]
    try:
        yield
    finally:
        registry.lookup_evaluators = original  # type: ignore[method-assign]


def _forgiving(evaluator: Any, opsets: Mapping[str, int]) -> Any:
    def call(node: ir.Node, op: Any, state: Any) -> Any:
        try:
            output = evaluator(node, op, state)
        except Exception:  # noqa: BLE001 - the node simply stays unfolded
            return None
        if output is None:
            return None
        new_nodes = output.new_nodes if isinstance(output, _constant_folding.Replacement) else op.nodes
        for new in new_nodes:
            _constant_as_tensor(new, opsets)
        if nodes_problem(list(new_nodes), opsets) is not None:
            return None  # the node stays as it is, which its opset has
        return output

    return call


_LIST_ATTRIBUTES = {"value_int": np.int64, "value_ints": np.int64, "value_float": np.float32, "value_floats": np.float32}


def _constant_as_tensor(node: ir.Node, opsets: Mapping[str, int]) -> None:
    """A Constant the folder wrote with value_int(s) / value_float(s) (opset 12 forms) rewritten with a ``value``
    tensor, which every opset has: PP-OCR cls (opset 11) keeps its folded Reshape shape instead of declining it."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or opsets.get("", opsets.get("ai.onnx", 0)) >= 12:
        return
    for name, dtype in _LIST_ATTRIBUTES.items():
        attribute = node.attributes.get(name)
        if attribute is None:
            continue
        values = attribute.as_ints() if dtype is np.int64 and name.endswith("s") else (
            attribute.as_floats() if name.endswith("s") else (attribute.as_int() if dtype is np.int64 else attribute.as_float()))
        node.attributes.pop(name)
        node.attributes["value"] = ir.AttrTensor("value", ir.tensor(np.asarray(values, dtype=dtype)))
        return


def _typed_values(model: ir.Model) -> list[tuple[ir.Value, ir.TypeProtocol]]:
    """Every node output with a type, to restore a type that the folder's shape inference erases: for an op
    whose inference says nothing (ai.onnx.preview.training.Gradient) it sets the output's type to None, and a
    graph output without a type fails onnx.checker."""
    return [(v, v.type) for node in ir.traversal.RecursiveGraphIterator(model.graph) for v in node.outputs if v.type is not None]


@dataclasses.dataclass
class FoldConstants(Pass):
    """Replace nodes computable from constants by their values (inputs up to max_input_elements elements)."""

    name = "fold-constants"
    keeps = frozenset({CONSTANTS_LIFTED})
    required = False
    max_input_elements: int = 1 << 20
    max_output_elements: int = 1 << 20
    shape_inference: bool = True

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        before = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
        quiet = logging.getLogger("onnxscript.optimizer._constant_folding")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # it logs every op it declines to fold
        typed = _typed_values(model)
        try:
            with _forgiving_evaluators(dict(model.opset_imports)):
                result = fold_constants_ir(
                    model,
                    onnx_shape_inference=self.shape_inference,
                    input_size_limit=self.max_input_elements,
                    output_size_limit=self.max_output_elements,
                )
        finally:
            quiet.setLevel(level)
        for value, type_ in typed:
            if value.type is None:
                value.type = type_
        modified = bool(getattr(result, "modified", False))
        if modified:
            # The folder leaves Constant nodes and dead producers behind: lift and sweep them here.
            common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
            common_passes.RemoveUnusedNodesPass()(model)
        after = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
        return self.result(model, modified or after != before, nodes_removed=before - after)
