"""Quantization parameters: from a float range or a weight tensor to scale, zero point and quantized values.

Activations: asymmetric uint8 (onnxruntime's fast CPU kernels take u8 activations with s8 weights) or
symmetric int8 (TensorRT), or FP8 E4M3 (TensorRT, scale = amax / 448). Weights: symmetric int8, per output
channel. Biases: int32 with scale = activation scale x weight scale, the form QLinearConv/QGemm fuse.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

FP8_E4M3_MAX = 448.0

ACTIVATION_TYPES = {
    "uint8": (ir.DataType.UINT8, 0, 255),
    "int8": (ir.DataType.INT8, -128, 127),
    "fp8": (ir.DataType.FLOAT8E4M3FN, -FP8_E4M3_MAX, FP8_E4M3_MAX),
}


@dataclasses.dataclass(frozen=True)
class QParams:
    scale: np.ndarray  # float32, scalar or [C]
    zero_point: np.ndarray  # of the quantized dtype, same shape as scale
    dtype: ir.DataType


def activation_qparams(lo: float, hi: float, kind: str) -> QParams:
    """Scale and zero point covering [lo, hi] (widened to include 0, as ONNX requires 0 to be exact)."""
    dtype, qmin, qmax = ACTIVATION_TYPES[kind]
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if kind == "fp8":
        amax = max(abs(lo), abs(hi)) or 1.0
        return QParams(np.float32(amax / FP8_E4M3_MAX), _fp8_zero(), dtype)
    if kind == "int8":  # symmetric
        amax = max(abs(lo), abs(hi)) or 1.0
        return QParams(np.float32(amax / qmax), np.int8(0), dtype)
    scale = (hi - lo) / (qmax - qmin) or 1.0
    zero_point = int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))
    return QParams(np.float32(scale), np.uint8(zero_point), dtype)


def _fp8_zero() -> np.ndarray:
    import ml_dtypes

    return np.array(0, dtype=ml_dtypes.float8_e4m3fn)


def quantize_weight(
    weight: np.ndarray, axis: int | None, kind: str = "int8", search: bool = True, qmax: int = 127
) -> tuple[np.ndarray, QParams]:
    """Symmetric quantization of a weight, per channel along ``axis`` (None: one scale for the tensor);
    ``search`` picks each channel's scale by least squared error instead of from its maximum alone. ``qmax``:
    the largest code (64 where the integer kernels may saturate, see cpu_target)."""
    w = weight.astype(np.float32)
    if axis is None:
        amax = np.abs(w).max(keepdims=False)
    else:
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=reduce)
    amax = np.where(amax == 0, 1.0, amax).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    if kind == "fp8":
        import ml_dtypes

        scale = (amax / FP8_E4M3_MAX).astype(np.float32)
        q = (w / scale.reshape(shape)).astype(ml_dtypes.float8_e4m3fn)
        return q, QParams(scale, np.zeros_like(scale, dtype=ml_dtypes.float8_e4m3fn), ir.DataType.FLOAT8E4M3FN)
    scale = mse_scale(w, amax, axis, qmax=qmax) if search else (amax / qmax).astype(np.float32)
    q = np.clip(np.rint(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, QParams(scale, np.zeros_like(scale, dtype=np.int8), ir.DataType.INT8)


def mse_scale(w: np.ndarray, amax: np.ndarray, axis: int | None, grid: int = 20, qmax: int = 127) -> np.ndarray:
    """Per channel, the scale among amax * [0.5 .. 1] / qmax with the least squared error: heavy-tailed
    channels lose less by clipping a few large weights than by rounding all the small ones coarsely."""
    moved = w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    moved = np.ascontiguousarray(moved, dtype=np.float32)
    peak = np.reshape(amax, (-1, 1)).astype(np.float32)
    peak = np.where(peak == 0, 1.0, peak)  # an all-zero channel: any scale is exact
    best_scale, best_err = peak / qmax, np.full(peak.shape, np.inf)
    error = np.empty_like(moved)  # one buffer reused in place: 2.5x faster than temporaries per step
    for ratio in np.linspace(0.5, 1.0, grid):
        scale = (peak * ratio / qmax).astype(np.float32)
        np.divide(moved, scale, out=error)
        np.rint(error, out=error)
        np.clip(error, -qmax, qmax, out=error)
        np.multiply(error, scale, out=error)
        np.subtract(error, moved, out=error)
        err = np.einsum("ij,ij->i", error, error)[:, None]
        better = err < best_err
        best_err, best_scale = np.where(better, err, best_err), np.where(better, scale, best_scale)
    return best_scale.reshape(np.shape(amax)).astype(np.float32)


def quantize_bias(bias: np.ndarray, input_scale: np.ndarray, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias and its scale (input scale x per-channel weight scale)."""
    scale = (np.float32(input_scale) * weight_scale).astype(np.float32)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(bias.astype(np.float64) / scale), -(2**31), 2**31 - 1).astype(np.int32)
    return q, scale


def add_constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as an initializer under ``name`` (suffixed _1, _2... if taken)."""
    base, i = name, 0
    while name in graph.initializers:
        i += 1
        name = f"{base}_{i}"
    tensor = ir.tensor(array, name=name)
    # type and shape on the value too: a later pass that cuts the graph into pieces feeds it as an input
    value = ir.Value(name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(tensor.shape), const_value=tensor)
    graph.register_initializer(value)
    return value


def folded_int8_weight(graph: ir.Graph, before: ir.Node, weight_value: ir.Value, q: np.ndarray, qp: QParams, axis: int | None) -> ir.Value:
    """int8 weight dequantized by Cast and Mul(scale), inserted before ``before``: standard ops on constants,
    which onnxruntime folds into a float weight when the session loads (its fastest float kernels, exact
    activations) while the file keeps one byte per weight. A DequantizeLinear would not be folded: onnxruntime
    keeps it for its QDQ fusions (DQ -> MatMul even becomes MatMulNBits, which quantizes activations).
    ``axis`` None with a scale of ``q``'s rank: the scale is used as it is (broadcast, e.g. one per LSTM gate row)."""
    shape = [1] * q.ndim
    if axis is not None:
        shape[axis] = -1
    elif np.ndim(qp.scale) == q.ndim:
        shape = list(np.shape(qp.scale))
    base = weight_value.name or f"{before.name}_weight"
    stored = add_constant(graph, f"{base}_int8", q)
    scale = add_constant(graph, f"{base}_int8_scale", np.reshape(qp.scale, shape).astype(np.float32))
    cast = ir.node("Cast", [stored], attributes={"to": ir.DataType.FLOAT}, name=f"{base}_int8_Cast")
    mul = ir.node("Mul", [cast.outputs[0], scale], name=f"{base}_int8_dequantize")
    mul.outputs[0].name = f"{base}_int8_dequantized"
    mul.outputs[0].type, mul.outputs[0].shape = weight_value.type, weight_value.shape
    before.graph.insert_before(before, [cast, mul])  # constants in ``graph``, the nodes beside ``before``
    return mul.outputs[0]


def replace_node(graph: ir.Graph, node: ir.Node, new_nodes: list[ir.Node]) -> None:
    """Put ``new_nodes`` where ``node`` was; the last one's output takes over ``node``'s output (name, type,
    shape, graph-output role)."""
    graph.insert_before(node, new_nodes)
    old, new = node.outputs[0], new_nodes[-1].outputs[0]
    new.type, new.shape = old.type, old.shape
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    name = old.name
    graph.remove(node, safe=True)
    new.name = name
