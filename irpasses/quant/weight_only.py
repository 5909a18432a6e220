"""weight-only: MatMul weights (and embedding tables) quantized block-wise to 4 or 8 bits.

Blocks of ``block`` rows along K, per output column, share a scale (symmetric: implicit zero point
2^(bits-1), the scale chosen by least squared error; asymmetric: scale and zero point from min and max).
Codes come from round-to-nearest, or from GPTQ (``gptq.py``) when calibration data is given: each row's
rounding error is pushed onto the rows not yet quantized, so the layer's *output* error stays small.

Two forms: com.microsoft ``MatMulNBits`` / ``GatherBlockQuantized`` for onnxruntime (packed weights
dequantized block by block inside its kernels), or standard int4/int8 ``DequantizeLinear`` with
``block_size`` (opset 21) for any runtime; onnxruntime fuses the latter back into MatMulNBits.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Literal

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as common_passes
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, TOPO_SORTED
from onnxpress.irpasses.quant.gptq import Prepared, gptq_quantize, prepare
from onnxpress.irpasses.quant.qparams import add_constant, replace_node


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

    def codes(self, bits: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Unpacked codes [N, blocks * block], scales [N, blocks] and zero points [N, blocks] (None: symmetric)."""
        n, blocks, _ = self.packed.shape
        codes = unpack(self.packed.reshape(n * blocks, -1), bits).reshape(n, blocks * block)
        zeros = None
        if self.zero_points is not None:
            per_row = -(-blocks * bits // 8)
            zeros = unpack(self.zero_points.reshape(n, per_row), bits)[:, :blocks]
        return codes, self.scales.reshape(n, blocks), zeros


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


def _best_symmetric_scale(w: np.ndarray, bits: int, grid: int = 24, chunk_elements: int = 1 << 20) -> np.ndarray:
    """Per block, the scale among a grid around max|w| / 2^(bits-1) that minimizes the block's squared error
    (plain max|w| / (2^(bits-1) - 1) wastes the most negative level; a little clipping often pays).
    float32 throughout, ``chunk_elements`` at a time: on MiniLM's 30,522-row embedding table the float64
    temporaries of a whole-table search took 320 MB."""
    half = 2 ** (bits - 1)
    amax = np.abs(w).max(axis=2, keepdims=True)
    amax = np.where(amax == 0, np.float32(1.0), amax).astype(np.float32)
    best_scale = amax / np.float32(half - 1)
    rows = max(1, chunk_elements // max(1, w[0].size))
    for start in range(0, w.shape[0], rows):
        part, top = w[start : start + rows].astype(np.float32, copy=False), amax[start : start + rows]
        best_err = np.full(top.shape, np.inf, dtype=np.float32)
        chosen = best_scale[start : start + rows]
        for ratio in np.linspace(0.7, half / (half - 1), grid, dtype=np.float32):
            scale = top * (ratio / np.float32(half))
            q = np.divide(part, scale)
            np.clip(np.rint(q, out=q), -half, half - 1, out=q)
            np.multiply(q, scale, out=q)
            np.subtract(q, part, out=q)
            err = np.einsum("nbk,nbk->nb", q, q)[..., None]
            better = err < best_err
            best_err = np.where(better, err, best_err)
            chosen[...] = np.where(better, scale, chosen)
    return best_scale

def block_scales(w: np.ndarray, bits: int, symmetric: bool, search: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point (unsigned code space) of each block of ``w`` [N, blocks, block]."""
    levels = 2**bits - 1
    if symmetric:
        half = 2 ** (bits - 1)
        if search:
            scale = _best_symmetric_scale(w, bits)
        else:
            scale = np.abs(w).max(axis=2, keepdims=True) / (half - 1)
            scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        return scale, np.full(scale.shape, half, dtype=np.float32)
    lo = np.minimum(w.min(axis=2, keepdims=True), 0)
    hi = np.maximum(w.max(axis=2, keepdims=True), 0)
    scale = ((hi - lo) / levels).astype(np.float32)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    return scale, np.clip(np.rint(-lo / scale), 0, levels)


def quantize_blocks(
    weight: np.ndarray, bits: int, block: int, symmetric: bool, search: bool = True, gptq: Prepared | None = None
) -> BlockQuantized:
    """Block quantization of a [K, N] weight, blocks along K: round-to-nearest, or GPTQ when ``gptq``
    (prepared from E[x xᵀ] of the MatMul's input, K padded to whole blocks) is given; ``search`` picks each
    block's symmetric scale by minimum squared error instead of from its maximum alone."""
    k, n = weight.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), dtype=np.float32)
    padded[:k] = weight
    levels = 2**bits - 1
    if gptq is not None:
        q, scale, zp = gptq_quantize(padded, gptq, block, levels, lambda g: block_scales(g, bits, symmetric, search))
    else:
        w = padded.T.reshape(n, blocks, block)  # [N, blocks, block]
        scale, zp = block_scales(w, bits, symmetric, search)
        q = np.divide(w, scale)  # in place from here: an embedding table is tens of MB
        np.rint(q, out=q)
        np.add(q, zp, out=q)
        np.clip(q, 0, levels, out=q)
    zero_points = None
    if not symmetric:
        per_row = -(-blocks * bits // 8) * (8 // bits) if bits == 4 else blocks
        zp_rows = np.zeros((n, per_row), dtype=np.uint8)
        zp_rows[:, :blocks] = zp.reshape(n, blocks)
        zero_points = pack(zp_rows, bits).reshape(-1)
    return BlockQuantized(pack(q.astype(np.uint8), bits), scale.reshape(-1).astype(weight.dtype), zero_points)


@dataclasses.dataclass
class WeightOnly(Pass):
    """Quantize MatMul weights (and optionally embedding tables) block-wise to 4/8 bits."""

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
    method: Literal["auto", "rtn", "gptq"] = "auto"
    """rtn: round to nearest; gptq: cancel rounding error with the calibration data's E[x xᵀ]; auto: gptq
    when calibration data is given, else rtn."""
    damp: float = 0.01
    """GPTQ's dampening, as a fraction of the mean diagonal of E[x xᵀ]."""
    act_order: bool = True
    """GPTQ: quantize the inputs with the largest E[x²] first (block scales fixed from the original weights)."""
    format: Literal["auto", "nbits", "qdq"] = "auto"
    """nbits: com.microsoft MatMulNBits/GatherBlockQuantized (onnxruntime); qdq: standard int4/int8
    DequantizeLinear with block_size (opset 21, any runtime; onnxruntime fuses it back to MatMulNBits);
    auto: nbits for --target ort, qdq otherwise."""
    embeddings: bool = True
    """Also quantize Gather tables (rows gathered by index, blocks along each row)."""
    accuracy_level: int = 0
    """MatMulNBits' compute type: 0 dequantizes to float (exact); 4 also quantizes activations to int8 per block
    (on MiniLM 8-bit: 3.4x faster, cosine 0.99973 instead of 0.99994). The qdq form leaves it to onnxruntime."""

    def __post_init__(self) -> None:
        if self.block < 16 or self.block & (self.block - 1):
            raise ValueError(f"block must be a power of two >= 16, got {self.block}")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        form = self.format if self.format != "auto" else ("nbits" if ctx.target == "ort" else "qdq")
        self._check_format(model, ctx, form)
        matmuls = [n for n in model.graph if self._weight(n, "MatMul", 1) is not None]
        gathers = [n for n in model.graph if self.embeddings and self._weight(n, "Gather", 0) is not None]
        method = self.method if self.method != "auto" else ("gptq" if ctx.samples is not None else "rtn")
        grams = self._gram_matrices(model, ctx, matmuls) if method == "gptq" and matmuls else {}
        readers = Counter(n.inputs[0].name for n in matmuls)
        plans: dict[str, Prepared] = {}
        emit = _NBitsEmitter(model, self) if form == "nbits" else _QDQEmitter(model, self)
        saved = 0
        with ctx.progress("weight-only", len(matmuls) + len(gathers)) as bar:
            for node in matmuls:
                source = node.inputs[0].name
                if source in grams and source not in plans:  # factored when first needed, dropped after its last reader
                    plans[source] = self._prepare(grams.pop(source))
                saved += emit.matmul(node, plans.get(source))
                readers[source] -= 1
                if not readers[source]:
                    plans.pop(source, None)
                bar.advance()
            skipped = []
            for node in gathers:
                done = emit.gather(node)
                saved += done
                if not done:
                    skipped.append(node.name)
                bar.advance()
        if matmuls or gathers:
            common_passes.RemoveUnusedNodesPass()(model)
        else:
            from onnxpress.irpasses.quant.placement import warn_if_nested

            warn_if_nested(model, ctx, self.name, frozenset({"MatMul", "Gather"}))
        return self.result(
            model, bool(matmuls or gathers), method=method, format=form, matmuls_quantized=len(matmuls),
            tables_quantized=len(gathers) - len(skipped), tables_skipped=skipped, bytes_saved=int(saved),
        )

    def _weight(self, node: ir.Node, op: str, index: int) -> ir.Tensor | None:
        """The constant 2-D float weight at input ``index`` of a default-domain ``op`` node, if large enough."""
        if node.op_type != op or node.domain not in ("", "ai.onnx") or len(node.inputs) <= index or node.inputs[index] is None:
            return None
        if op == "Gather" and node.attributes.get_int("axis", 0) != 0:
            return None
        value = node.inputs[index]
        tensor = value.const_value
        if tensor is None or value.is_graph_input() or len(tensor.shape) != 2 or tensor.size < self.min_elements:
            return None
        return tensor if tensor.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16) else None

    def _check_format(self, model: ir.Model, ctx: PassContext, form: str) -> None:
        if form == "nbits" and ctx.target not in (None, "ort"):
            raise PassOptionError(
                f"pass 'weight-only' with format=nbits emits com.microsoft ops, which only onnxruntime runs (target is {ctx.target})",
                hint="use format=qdq (standard DequantizeLinear with block_size, opset 21)",
            )
        opset = model.opset_imports.get("", 0)
        if form == "qdq" and opset < 21:
            raise PassOptionError(
                f"pass 'weight-only' with format=qdq writes blocked int{self.bits} DequantizeLinear, which needs opset 21 "
                f"(the model is at opset {opset})",
                hint="put convert-opset{min=21} before it, or add --target ort for com.microsoft.MatMulNBits",
            )

    def _gram_matrices(self, model: ir.Model, ctx: PassContext, matmuls: list[ir.Node]) -> dict[str, np.ndarray]:
        """E[x xᵀ] of every quantized MatMul's input over the calibration data (once per distinct input: q, k
        and v projections share theirs)."""
        from onnxpress.irpasses.quant.collect import stream_statistics
        from onnxpress.irpasses.quant.data import calibration_samples
        from onnxpress.irpasses.quant.gptq import GramMatrix

        names = {n.inputs[0].name: None for n in matmuls if n.inputs[0] is not None and n.inputs[0].name}
        samples = calibration_samples(ctx, model, False, self.name)
        grams = stream_statistics(
            model, samples, {name: GramMatrix() for name in names}, show_progress=ctx.show_progress, description="gptq statistics"
        )
        return {name: grams.pop(name).hessian() for name in list(grams) if not grams[name].empty}

    def _prepare(self, hessian: np.ndarray) -> Prepared:
        """GPTQ's factored inverse, with K padded to whole blocks by dead inputs (their weights are zeroed)."""
        k = len(hessian)
        padded = np.zeros((-(-k // self.block) * self.block,) * 2)
        padded[:k, :k] = hessian
        return prepare(padded, self.damp, self.act_order)


class _NBitsEmitter:
    """onnxruntime's contrib ops: MatMulNBits for MatMuls, GatherBlockQuantized for embedding tables."""

    def __init__(self, model: ir.Model, options: WeightOnly) -> None:
        self.model, self.o = model, options
        model.opset_imports.setdefault("com.microsoft", 1)

    def matmul(self, node: ir.Node, gptq: Prepared | None) -> int:
        o, weight_value = self.o, node.inputs[1]
        weight = weight_value.const_value.numpy()
        k, n = weight.shape
        q = quantize_blocks(weight.astype(np.float32), o.bits, o.block, o.symmetric, o.search, gptq)
        base = weight_value.name or node.name
        inputs = [node.inputs[0], self._constant(f"{base}_q{o.bits}", q.packed), self._constant(f"{base}_scales", q.scales.astype(weight.dtype))]
        if q.zero_points is not None:
            inputs.append(self._constant(f"{base}_zero_points", q.zero_points))
        attributes = {"K": k, "N": n, "bits": o.bits, "block_size": o.block, "accuracy_level": o.accuracy_level}
        replace_node(self.model.graph, node, [ir.node("MatMulNBits", inputs, domain="com.microsoft", name=f"{node.name or base}_nbits", attributes=attributes)])
        return weight.nbytes - q.packed.nbytes - q.scales.nbytes

    def gather(self, node: ir.Node) -> int:
        o, table_value = self.o, node.inputs[0]
        table = table_value.const_value.numpy()
        rows, cols = table.shape
        if cols % o.block:
            return 0  # GatherBlockQuantized needs whole blocks along each row
        q = quantize_blocks(table.T.astype(np.float32), o.bits, o.block, o.symmetric, o.search)
        base = table_value.name or node.name
        blocks = cols // o.block
        inputs = [
            self._constant(f"{base}_q{o.bits}", q.packed.reshape(rows, -1)), node.inputs[1],
            self._constant(f"{base}_scales", q.scales.reshape(rows, blocks).astype(table.dtype)),
        ]
        if q.zero_points is not None:
            inputs.append(self._constant(f"{base}_zero_points", q.zero_points.reshape(rows, -1)))
        attributes = {"gather_axis": 0, "quantize_axis": 1, "block_size": o.block, "bits": o.bits}
        replace_node(self.model.graph, node, [ir.node("GatherBlockQuantized", inputs, domain="com.microsoft", name=f"{node.name or base}_q", attributes=attributes)])
        return table.nbytes - q.packed.nbytes - q.scales.nbytes

    def _constant(self, name: str, array: np.ndarray) -> ir.Value:
        return add_constant(self.model.graph, name, array)


class _QDQEmitter(_NBitsEmitter):
    """Standard ONNX: int4/int8 weight -> DequantizeLinear(axis, block_size) -> MatMul / Gather (opset 21)."""

    def __init__(self, model: ir.Model, options: WeightOnly) -> None:
        self.model, self.o = model, options

    def matmul(self, node: ir.Node, gptq: Prepared | None) -> int:
        o, weight_value = self.o, node.inputs[1]
        weight = weight_value.const_value.numpy()
        k = weight.shape[0]
        q = quantize_blocks(weight.astype(np.float32), o.bits, o.block, o.symmetric, o.search, gptq)
        codes, scales, zeros = q.codes(o.bits, o.block)  # [N, blocks * block], [N, blocks]
        dq = self._dequantize(weight_value.name or node.name, codes[:, :k].T, scales.T, None if zeros is None else zeros.T, 0, weight.dtype)
        node.replace_input_with(1, dq)
        return weight.nbytes - q.packed.nbytes - q.scales.nbytes

    def gather(self, node: ir.Node) -> int:
        o, table_value = self.o, node.inputs[0]
        table = table_value.const_value.numpy()
        cols = table.shape[1]
        if cols % o.block:
            return 0
        q = quantize_blocks(table.T.astype(np.float32), o.bits, o.block, o.symmetric, o.search)
        codes, scales, zeros = q.codes(o.bits, o.block)  # rows are the table's rows
        # Gather the rows first, then dequantize only them: a DequantizeLinear of the whole table is not folded
        # by onnxruntime and ran every call (3x slower than float on MiniLM). Gather takes no int4 at opset 21,
        # so the codes are stored one per byte (int8/uint8 holding 4-bit values; the size win is halved).
        base = table_value.name or node.name
        signed = zeros is None
        stored = (codes[:, :cols].astype(np.int16) - 2 ** (o.bits - 1)).astype(np.int8) if signed else codes[:, :cols].astype(np.uint8)
        ids = node.inputs[1]
        parts = [(f"{base}_q{o.bits}", stored), (f"{base}_scales", scales.astype(table.dtype))]
        if not signed:
            parts.append((f"{base}_zero_points", zeros.astype(np.uint8)))
        gathers = [ir.node("Gather", [self._constant(name, array), ids], attributes={"axis": 0}, name=f"{name}_gather") for name, array in parts]
        dq = ir.node(
            "DequantizeLinear", [g.outputs[0] for g in gathers], name=f"{base}_dequantize", attributes={"axis": -1, "block_size": o.block}
        )
        replace_node(self.model.graph, node, [*gathers, dq])
        return table.nbytes - stored.nbytes - scales.nbytes

    def _dequantize(self, base: str, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, axis: int, dtype: np.dtype) -> ir.Value:
        import ml_dtypes

        o = self.o
        half = 2 ** (o.bits - 1)
        if zeros is None:  # symmetric: signed codes, zero point 0
            store = {4: ml_dtypes.int4, 8: np.int8}[o.bits]
            values = (codes.astype(np.int16) - half).astype(store)
        else:
            store = {4: ml_dtypes.uint4, 8: np.uint8}[o.bits]
            values = codes.astype(store)
        inputs = [self._constant(f"{base}_q{o.bits}", values), self._constant(f"{base}_scales", scales.astype(dtype))]
        if zeros is not None:
            inputs.append(self._constant(f"{base}_zero_points", zeros.astype(store)))
        dq = ir.node("DequantizeLinear", inputs, name=f"{base}_dequantize", attributes={"axis": axis, "block_size": o.block})
        self.model.graph.insert_before(self.model.graph.node(0), dq)
        return dq.outputs[0]
