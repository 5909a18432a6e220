"""Where Q/DQ pairs go, per target backend, and which layers stay float (excluded or numerically fragile).

A *site* is one compute node to run in integer arithmetic: its activation inputs get Q->DQ, its constant
weight becomes int8 + DequantizeLinear (per output channel), its bias int32. The backends differ in what
they fuse:

- onnxruntime CPU (``ort``, and the default): ``DQ -> Conv/MatMul/Gemm -> Q`` becomes QLinearConv /
  QLinearMatMul / QGemm, so the site's *output* is quantized too; without it ORT runs the float op on
  dequantized data (slower than float). A Relu that is the output's only consumer is absorbed: uint8 with
  zero point 0 clamps at 0 already (onnxruntime's quantizer does the same).
- TensorRT (``tensorrt``): explicit quantization wants Q/DQ on the inputs of Conv/MatMul/Gemm and fuses the
  output scaling itself, so outputs are left float.

Fragile layers stay float and are named in the report: the last compute layers before a Sigmoid/Softmax
that ends in a model output (detection scores, class probabilities), layers whose output feeds a Softmax,
and layers whose output feeds a decomposed normalization (ReduceMean/Pow: E[x^2]-E[x]^2 cancels badly).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

import onnx_ir as ir

ANCHOR_OPS = frozenset({"Conv", "MatMul", "Gemm"})
SCORE_OPS = frozenset({"Sigmoid", "Softmax", "LogSoftmax"})
NORMALIZATION_OPS = frozenset({"ReduceMean", "Pow", "ReduceSumSquare"})


@dataclasses.dataclass
class Site:
    node: ir.Node
    weight_axis: int
    """Axis of the weight holding output channels (Conv: 0, MatMul: 1, Gemm: 0 or 1 by transB)."""
    quantize_output: bool
    absorbed_relu: ir.Node | None = None
    weights_only: bool = False
    demoted: bool = False
    """Taken out of full quantization by the fidelity search (its weights follow the pass's ``sensitive``)."""
    """int8 weight behind a DequantizeLinear, activations float (a sensitive layer that keeps its size win)."""


@dataclasses.dataclass
class Placement:
    sites: list[Site]
    kept_float: dict[str, str]
    """Node name -> why it stays float (excluded by the user or detected as fragile)."""
    int32_bias: bool = True
    """onnxruntime fuses int32 biases (DequantizeLinear) into QLinearConv; TensorRT wants them float."""

    def activation_values(self) -> list[ir.Value]:
        """Every activation that gets a Q->DQ pair, each once, in graph order of the sites."""
        seen: dict[int, ir.Value] = {}
        for site in self.sites:
            if site.weights_only:
                continue
            x = site.node.inputs[0]
            seen.setdefault(id(x), x)
            if site.quantize_output:
                out = site.absorbed_relu.outputs[0] if site.absorbed_relu is not None else site.node.outputs[0]
                seen.setdefault(id(out), out)
        return list(seen.values())


def _is_float(value: ir.Value | None) -> bool:
    return value is not None and value.dtype in (ir.DataType.FLOAT, None)


def _weight_axis(node: ir.Node) -> int | None:
    """The output-channel axis of the node's constant weight, or None when it has no usable constant weight."""
    if len(node.inputs) < 2 or node.inputs[1] is None or node.inputs[1].const_value is None:
        return None
    if node.inputs[0] is None or node.inputs[0].const_value is not None or not _is_float(node.inputs[0]):
        return None
    weight = node.inputs[1].const_value
    if weight.dtype != ir.DataType.FLOAT:
        return None
    if node.op_type == "Conv":
        return 0
    if len(weight.shape) != 2:
        return None
    if node.op_type == "MatMul":
        return 1
    if node.attributes.get_int("transA", 0):
        return None
    return 0 if node.attributes.get_int("transB", 0) else 1


def excluded_by(node: ir.Node, patterns: Iterable[str]) -> str | None:
    """The first of ``patterns`` (an op type, or a regex matching the whole node name) that ``node`` matches."""
    for pattern in patterns:
        if pattern == node.op_type or (node.name and re.fullmatch(pattern, node.name)):
            return pattern
    return None


def _consumers(value: ir.Value) -> list[ir.Node]:
    return [use.node for use in value.uses()]


def _fragile_reason(node: ir.Node, score_heads: set[int]) -> str | None:
    if id(node) in score_heads:
        return "last layer before a Sigmoid/Softmax model output (scores)"
    consumers = _consumers(node.outputs[0])
    if any(c.op_type in ("Softmax", "LogSoftmax") for c in consumers):
        return "feeds a Softmax"
    if any(c.op_type in NORMALIZATION_OPS for c in consumers):
        return "feeds a decomposed normalization (ReduceMean/Pow)"
    return None


def score_heads(graph: ir.Graph, anchors: frozenset[str] = ANCHOR_OPS | {"ConvTranspose"}) -> set[int]:
    """ids of the compute nodes nearest to each model output whose path to it passes a Sigmoid/Softmax."""
    heads: set[int] = set()
    for output in graph.outputs:
        stack: list[tuple[ir.Value, bool]] = [(output, False)]
        seen: set[int] = set()
        while stack:
            value, through_score = stack.pop()
            producer = value.producer()
            if producer is None or id(producer) in seen:
                continue
            seen.add(id(producer))
            if producer.op_type in anchors:
                if through_score:
                    heads.add(id(producer))
                continue
            scored = through_score or producer.op_type in SCORE_OPS
            stack.extend((v, scored) for v in producer.inputs if v is not None and v.const_value is None)
    return heads


def _tiny_spatial(node: ir.Node) -> bool:
    """A Conv on a 1x1 map (squeeze-excitation after a global pool): integer kernels gain nothing there and
    the Q/DQ only adds error, so it gets int8 weights with float activations."""
    x = node.inputs[0]
    producer = x.producer() if x is not None else None
    if producer is not None and producer.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return True
    shape = x.shape if x is not None else None
    return shape is not None and len(shape) == 4 and all(isinstance(d, int) and d == 1 for d in shape[2:])


def saturation_window(value: ir.Value) -> tuple[float, float] | None:
    """The input interval outside which every consumer of ``value`` is flat: quantizing beyond it is wasted
    range (HardSwish is 0 below -3; HardSigmoid saturates at both ends; Relu/Clip clamp). None if any consumer
    is not such an op."""
    lows, highs = [], []
    for use in value.uses():
        node = use.node
        if node.op_type == "HardSwish":
            lows.append(-3.0), highs.append(float("inf"))
        elif node.op_type == "HardSigmoid":
            alpha = node.attributes.get_float("alpha", 0.2)
            beta = node.attributes.get_float("beta", 0.5)
            if alpha <= 0:
                return None
            lows.append(-beta / alpha), highs.append((1.0 - beta) / alpha)
        elif node.op_type == "Relu":
            lows.append(0.0), highs.append(float("inf"))
        elif node.op_type == "Clip" and use.idx == 0:
            bounds = [v.const_value.numpy().item() if v is not None and v.const_value is not None else None for v in node.inputs[1:3]]
            bounds += [None] * (2 - len(bounds))
            lows.append(float("-inf") if bounds[0] is None else float(bounds[0]))
            highs.append(float("inf") if bounds[1] is None else float(bounds[1]))
        else:
            return None
    if not lows or value.is_graph_output():
        return None
    return min(lows), max(highs)


def place(model: ir.Model, target: str | None, exclude: Iterable[str] = (), keep_fragile: bool = True) -> Placement:
    """Choose the sites of ``model`` for ``target``; ``exclude`` holds op types or regexes over node names."""
    from onnxpress.irpasses.quant import bodies

    outputs_quantized = target != "tensorrt"
    heads = score_heads(model.graph) if keep_fragile else set()
    owned_by = bodies.owners(model)
    ambiguous = bodies.shared_names(model)
    sites: list[Site] = []
    kept: dict[str, str] = {}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):  # If/Loop/Scan bodies too (see ``bodies``)
        if node.op_type not in ANCHOR_OPS or node.domain not in ("", "ai.onnx"):
            continue
        axis = _weight_axis(node)
        if axis is None:
            continue
        label = node.name or node.outputs[0].name or node.op_type
        pattern = excluded_by(node, exclude)
        if pattern is not None:
            kept[label] = f"excluded by '{pattern}'"
            continue
        if node.graph is not model.graph and not bodies.reachable(node.outputs[0], model, owned_by):
            kept[label] = "inside an If that sits in a Loop/Scan body: its activations cannot be calibrated"
            continue
        if ambiguous and {node.inputs[0].name, node.outputs[0].name} & ambiguous:
            kept[label] = "its activation's name is given to another value too (a sibling branch): statistics kept by name would mix"
            continue
        reason = _fragile_reason(node, heads) if keep_fragile else None
        if reason is not None:
            kept[label] = reason
            continue
        out = node.outputs[0]
        relu = None
        quantize_output = outputs_quantized and _is_float(out)
        if quantize_output and not out.is_graph_output():
            consumers = _consumers(out)
            if len(consumers) == 1 and consumers[0].op_type == "Relu" and not out.is_graph_output():
                relu = consumers[0]
        if outputs_quantized and node.op_type == "Conv" and _tiny_spatial(node):
            sites.append(Site(node, axis, False, None, weights_only=True))
            continue
        sites.append(Site(node, axis, quantize_output, relu))
    return Placement(sites, kept, int32_bias=outputs_quantized)
