"""weight-only: MatMul weights quantized block-wise to 4 or 8 bits, emitted as com.microsoft.MatMulNBits.

For each MatMul whose second input is a constant [K, N] float matrix: blocks of ``block`` rows along K, per
output column, are quantized round-to-nearest (symmetric: scale = max|w| / (2^(bits-1) - 1), stored with the
implicit zero point 2^(bits-1); asymmetric: scale and a zero point from the block's min and max). The packed
weights live in the model; onnxruntime dequantizes block by block inside its kernel. Needs a target that runs
com.microsoft ops (``--target ort``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as common_passes
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, TOPO_SORTED
from onnxpress.irpasses.quant.qparams import add_constant


@dataclasses.dataclass
class BlockQuantized:
    packed: np.ndarray  # uint8 [N, blocks, block * bits / 8]
    scales: np.ndarray  # float [N * blocks]
    zero_points: np.ndarray | None  # uint8 packed [N * ceil(blocks * bits / 8)] (asymmetric only)

    def dequantize(self, k: int, bits: int, block: int) -> np.ndarray:
        """The float [K, N] weight these bytes stand for (used by tests and error reports)."""
        n, blocks, _ = self.packed.shape
        q = unpack(self.packed.reshape(n * blocks, -1), bits).reshape(n, blocks, block).astype(np.float32)
        if self.zero_points is None:
            zp = np.full((n, blocks, 1), 2 ** (bits - 1), dtype=np.float32)
        else:
            per_row = -(-blocks * bits // 8)
            zp = unpack(self.zero_points.reshape(n, per_row), bits)[:, :blocks].reshape(n, blocks, 1).astype(np.float32)
        w = (q - zp) * self.scales.reshape(n, blocks, 1)
        return w.reshape(n, blocks * block)[:, :k].T


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned integers (< 2^bits) along the last axis, low bits first (MatMulNBits' layout)."""
    if bits == 8:
        return values.astype(np.uint8)
    pairs = values.reshape(*values.shape[:-1], -1, 2).astype(np.uint8)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)


def unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    low, high = packed & 0x0F, packed >> 4
    return np.stack([low, high], axis=-1).reshape(*packed.shape[:-1], -1)


def _best_symmetric_scale(w: np.ndarray, bits: int, grid: int = 24) -> np.ndarray:
    """Per block, the scale among a grid around max|w| / 2^(bits-1) that minimizes the block's squared error
    (plain max|w| / (2^(bits-1) - 1) wastes the most negative level; a little clipping often pays)."""
    half = 2 ** (bits - 1)
    amax = np.abs(w).max(axis=2, keepdims=True)
    amax = np.where(amax == 0, 1.0, amax)
    best_scale = amax / (half - 1)
    best_err = np.full(amax.shape, np.inf)
    for ratio in np.linspace(0.7, half / (half - 1), grid):
        scale = amax * ratio / half
        q = np.clip(np.rint(w / scale), -half, half - 1)
        err = np.sum((q * scale - w) ** 2, axis=2, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, scale, best_scale)
    return best_scale.astype(np.float32)


def quantize_blocks(weight: np.ndarray, bits: int, block: int, symmetric: bool, search: bool = True) -> BlockQuantized:
    """Round-to-nearest block quantization of a [K, N] weight, blocks along K; ``search`` picks each block's
    scale by minimum squared error instead of from its maximum alone."""
    k, n = weight.shape
    blocks = -(-k // block)
    w = np.zeros((blocks * block, n), dtype=np.float32)
    w[:k] = weight
    w = w.T.reshape(n, blocks, block)  # [N, blocks, block]
    levels = 2**bits - 1
    if symmetric:
        half = 2 ** (bits - 1)
        if search:
            scale = _best_symmetric_scale(w, bits)
        else:
            scale = np.abs(w).max(axis=2, keepdims=True) / (half - 1)
            scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        q = np.clip(np.rint(w / scale) + half, 0, levels)
        zero_points = None
    else:
        lo = np.minimum(w.min(axis=2, keepdims=True), 0)
        hi = np.maximum(w.max(axis=2, keepdims=True), 0)
        scale = ((hi - lo) / levels).astype(np.float32)
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        zp = np.clip(np.rint(-lo / scale), 0, levels)
        q = np.clip(np.rint(w / scale) + zp, 0, levels)
        per_row = -(-blocks * bits // 8) * (8 // bits) if bits == 4 else blocks
        zp_rows = np.zeros((n, per_row), dtype=np.uint8)
        zp_rows[:, :blocks] = zp.reshape(n, blocks)
        zero_points = pack(zp_rows, bits).reshape(-1)
    return BlockQuantized(pack(q.astype(np.uint8), bits), scale.reshape(-1).astype(weight.dtype), zero_points)


@dataclasses.dataclass
class WeightOnly(Pass):
    """Quantize MatMul weights block-wise to 4/8 bits as com.microsoft.MatMulNBits (needs --target ort)."""

    name = "weight-only"
    lossy = True
    keeps = frozenset({TOPO_SORTED, CONSTANTS_LIFTED})
    needs = frozenset({CONSTANTS_LIFTED})
    bits: Literal[4, 8] = 4
    block: int = 32
    symmetric: bool = True
    min_elements: int = 4096
    """Smaller weights stay float: their bytes don't matter and their error would."""
    search: bool = True
    """Choose each block's scale by minimum squared error (symmetric); false: max|w| alone."""
    accuracy_level: int = 0
    """onnxruntime's compute type: 0 dequantizes to float (exact); 4 also quantizes activations to int8 (faster)."""

    def __post_init__(self) -> None:
        if self.block < 16 or self.block & (self.block - 1):
            raise ValueError(f"block must be a power of two >= 16, got {self.block}")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        if ctx.target != "ort":
            raise PassOptionError(
                "pass 'weight-only' emits com.microsoft.MatMulNBits, which only onnxruntime runs",
                hint="add --target ort (standard DequantizeLinear with block_size, opset 21, is not written yet)",
            )
        count, saved = 0, 0
        for node in list(model.graph):
            if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or node.inputs[1] is None:
                continue
            weight_value = node.inputs[1]
            tensor = weight_value.const_value
            if tensor is None or weight_value.is_graph_input() or len(tensor.shape) != 2 or tensor.size < self.min_elements:
                continue
            if tensor.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
                continue
            weight = tensor.numpy()
            k, n = weight.shape
            q = quantize_blocks(weight.astype(np.float32), self.bits, self.block, self.symmetric, self.search)
            base = weight_value.name or f"matmul{count}"
            inputs = [
                node.inputs[0],
                add_constant(model.graph, f"{base}_q{self.bits}", q.packed),
                add_constant(model.graph, f"{base}_scales", q.scales.astype(weight.dtype)),
            ]
            if q.zero_points is not None:
                inputs.append(add_constant(model.graph, f"{base}_zero_points", q.zero_points))
            fused = ir.node(
                "MatMulNBits", inputs, domain="com.microsoft", name=(node.name or base) + "_nbits",
                attributes={"K": k, "N": n, "bits": self.bits, "block_size": self.block, "accuracy_level": self.accuracy_level},
            )
            model.graph.insert_before(node, fused)
            out = node.outputs[0]
            fused.outputs[0].type, fused.outputs[0].shape = out.type, out.shape
            out.replace_all_uses_with(fused.outputs[0], replace_graph_outputs=True)
            name = out.name
            model.graph.remove(node, safe=True)
            fused.outputs[0].name = name
            saved += tensor.nbytes - q.packed.nbytes - q.scales.nbytes
            count += 1
        if count:
            model.opset_imports.setdefault("com.microsoft", 1)
            common_passes.RemoveUnusedNodesPass()(model)
        return self.result(model, count > 0, matmuls_quantized=count, bytes_saved=int(saved))
