"""Which layers ``lowrank`` can factorize, and each one's candidate forms as a curve it can rewrite itself into.

- matrix: MatMul/Gemm with a constant 2-D weight, and 1x1 Conv of one group without pads (``matrix_view``);
- conv: 2-D k x k Conv of one group (explicit pads or VALID): spatial SVD or Tucker-2 (``conv``).
Grouped and depthwise convs are left alone (their kernels are [O, 1, k, k]: nothing to share across channels).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.lowrank import emit
from onnxpress.irpasses.lowrank.conv import ConvFactors, ConvGeometry, ConvShapes, conv_curve
from onnxpress.irpasses.lowrank.factor import Choice, Curve, Factored, largest_paying_rank, matrix_curve, plain_svd, whitened_svd
from onnxpress.irpasses.quant.gptq import MatrixView, matrix_view
from onnxpress.irpasses.quant.placement import excluded_by

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)


@dataclasses.dataclass
class Layer:
    """A factorizable node: ``view`` for matrix layers, ``geometry`` for k x k convs."""

    node: ir.Node
    view: MatrixView | None = None
    geometry: ConvGeometry | None = None

    @property
    def kind(self) -> str:
        return "matrix" if self.view is not None else "conv"

    @property
    def weight(self) -> np.ndarray:
        """Matrix layers: the weight as [K, N]; convs: the kernel [O, I, kh, kw]."""
        array = self.node.inputs[1].const_value.numpy().astype(np.float32)
        return self.view.to_kn(array) if self.view is not None else array


def find_layers(model: ir.Model, exclude: list[str], min_elements: int, multiple: int) -> list[Layer]:
    """The main graph's layers whose factors could be smaller (a body's weight is rewritten in every iteration)."""
    found = []
    for node in model.graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        if (weight is None or weight.const_value is None or weight.is_graph_input() or len(list(weight.uses())) != 1
                or weight.const_value.dtype not in FLOAT_TYPES or weight.const_value.size < min_elements
                or excluded_by(node, exclude) is not None):
            continue
        shape = tuple(int(d) for d in weight.const_value.shape.numpy())
        attributes = {k: a.value for k, a in node.attributes.items()}
        view = matrix_view(node.op_type, shape, attributes)
        if view is not None:
            k, n = view.to_kn(np.broadcast_to(np.float32(0), shape)).shape
            if largest_paying_rank(k, n, multiple):
                found.append(Layer(node, view=view))
        elif _plain_conv(node, shape, attributes):
            found.append(Layer(node, geometry=ConvGeometry.of(attributes, shape[2:])))
    return found


def _plain_conv(node: ir.Node, shape: tuple[int, ...], attributes: dict[str, Any]) -> bool:
    return (node.op_type == "Conv" and len(shape) == 4 and shape[2] * shape[3] > 1 and attributes.get("group", 1) == 1
            and attributes.get("auto_pad", "NOTSET") in ("NOTSET", "VALID") and min(shape[0], shape[1]) > 1)


@dataclasses.dataclass
class Candidates:
    """A layer's curve (whole, or any choice) and how to rewrite it to a choice."""

    layer: Layer
    curve: Curve
    factors: Factored | ConvFactors
    shape: tuple[int, ...]
    """The weight's shape before any rewrite."""
    mean: np.ndarray | None = None
    """E[x] of the layer's inputs (patches for k x k convs) where the bias takes the mean output shift."""
    shift: np.ndarray | None = None
    """The float layer's mean output (less its bias) where the factors see other inputs than the float layer
    (``sequential``: E[x] W, while ``mean`` is the factorized model's E[x_c]); None: ``mean`` times the weight."""

    def rewrite(self, node: ir.Node, choice: Choice) -> None:
        """Rewrite ``node`` (the layer, or its copy in a snapshot) into ``choice``'s factors; the mean shift
        (W - Ŵ)ᵀ E[x] goes into the bias, so only the centered error remains (what the curve measured)."""
        dtype = node.inputs[1].const_value.dtype.numpy()
        slot = emit.bias_slot(node) if self.mean is not None else None
        if slot is not None:
            delta = self._delta(choice)
        if choice.kind == "matrix":
            first, second = self.factors.factors(choice.ranks[0])
            emit.split_matrix(node, first.astype(dtype), second.astype(dtype))
        else:
            parts = [None if p is None else p.astype(dtype) for p in self.factors.weights(choice)]
            if choice.kind == "spatial":
                emit.split_spatial(node, *parts)
            else:
                emit.split_tucker(node, *parts)
        if slot is not None:
            emit.correct_bias(node, slot, delta)

    def _delta(self, choice: Choice) -> np.ndarray:
        """The bias change keeping the float mean output: shift - E[x] Ŵ (shift: E[x] W unless set)."""
        if choice.kind == "matrix":
            approx = self.factors.approximation(choice.ranks[0])
            shift = self.mean @ self.layer.weight.astype(np.float64) if self.shift is None else self.shift
            return shift - self.mean @ approx
        kernel = self.factors.kernel.astype(np.float64)
        shift = kernel.reshape(kernel.shape[0], -1) @ self.mean if self.shift is None else self.shift
        return shift - self.factors.approximation(choice).reshape(kernel.shape[0], -1) @ self.mean


def candidates(layer: Layer, moments: tuple[np.ndarray, np.ndarray] | None, method: str, damp: float, multiple: int,
               shapes: tuple[tuple[int, ...], tuple[int, ...]] | None) -> Candidates:
    """The layer's curve; ``moments``: (E[x xᵀ], E[x]) over the weight's input channels (matrix) or the input
    patches (conv), None without data; ``shapes``: (input, output) on the first sample, for multiply-adds.
    Where the bias can absorb the mean shift, truncation and errors use the covariance E[x xᵀ] - E[x] E[x]ᵀ."""
    weight = layer.weight
    features = weight.shape[0] if layer.view is not None else int(np.prod(weight.shape[1:]))
    gram, mean, energy = None, None, None
    if moments is not None and moments[0].shape[0] == features:
        gram = energy = moments[0].astype(np.float64)
        if emit.bias_slot(layer.node) is not None:
            mean = moments[1].astype(np.float64)
            gram = energy - np.outer(mean, mean)
    if layer.view is not None:
        factored = whitened_svd(weight, gram, damp) if method == "whitened" and gram is not None else plain_svd(weight, gram)
        if energy is not None:
            factored.total = float(((energy @ weight) * weight).sum())
        rows = float(np.prod(shapes[1])) / weight.shape[1] if shapes else 1.0  # output elements / N
        return Candidates(layer, matrix_curve(factored, multiple, rows), factored, tuple(layer.node.inputs[1].const_value.shape), mean)
    o, i, kh, kw = weight.shape
    if gram is None:
        gram, method = np.eye(features), "svd"
    factors = ConvFactors(weight, gram, method, damp, energy)
    if shapes is not None and len(shapes[0]) == 4 and len(shapes[1]) == 4:
        (batch, _, ih, iw), (_, _, oh, ow) = shapes[0], shapes[1]
        sizes = ConvShapes(batch, ih, iw, oh, ow)
    else:  # unknown: one output position, the input as the strides make it
        assert layer.geometry is not None
        sizes = ConvShapes(1, layer.geometry.strides[0], layer.geometry.strides[1], 1, 1)
    return Candidates(layer, conv_curve(factors, sizes, multiple), factors, tuple(weight.shape), mean)
