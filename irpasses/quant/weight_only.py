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
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.cleanup.dead_code import remove_unused
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, TOPO_SORTED
from onnxpress.irpasses.quant.gptq import Prepared, gptq_quantize, prepare
from onnxpress.irpasses.quant.qparams import add_constant, replace_node
from onnxpress.irpasses.quant.sensitivity import FLOAT, FULL, REDUCED


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


class _ScaleSearch:
    """The best symmetric scale found so far for each block of ``part`` (written into ``chosen``)."""

    def __init__(self, part: np.ndarray, top: np.ndarray, half: int, chosen: np.ndarray) -> None:
        self.part, self.top, self.half, self.chosen = part, top, half, chosen
        self.error = np.full(top.shape, np.inf, dtype=np.float32)
        self.ratio = np.ones(top.shape, dtype=np.float32)

    def attempt(self, ratio: np.ndarray | np.float32) -> None:
        """Try scale = max|w| * ratio / half (one ratio, or one per block); keep it where the error drops."""
        scale = self.top * (ratio / np.float32(self.half))
        q = np.divide(self.part, scale)
        np.clip(np.rint(q, out=q), -self.half, self.half - 1, out=q)
        np.multiply(q, scale, out=q)
        np.subtract(q, self.part, out=q)
        err = np.einsum("nbk,nbk->nb", q, q)[..., None]
        better = err < self.error
        self.error[...] = np.where(better, err, self.error)
        self.ratio[...] = np.where(better, ratio, self.ratio)
        self.chosen[...] = np.where(better, scale, self.chosen)


def _best_symmetric_scale(w: np.ndarray, bits: int, coarse: int = 8, chunk_elements: int = 1 << 20) -> np.ndarray:
    """Per block, the scale among ratios of max|w| / 2^(bits-1) in [0.7, 2^(bits-1) / (2^(bits-1) - 1)] that
    minimizes the block's squared error (plain max|w| / (2^(bits-1) - 1) wastes the most negative level; a
    little clipping often pays): ``coarse`` evenly spaced ratios, then 4 more around each block's best, as
    fine as a 24-point grid in half its passes (MiniLM RTN: 0.24 -> 0.12 s). float32 throughout,
    ``chunk_elements`` at a time: on MiniLM's 30,522-row embedding table the float64 temporaries of a
    whole-table search took 320 MB."""
    half = 2 ** (bits - 1)
    amax = np.abs(w).max(axis=2, keepdims=True)
    amax = np.where(amax == 0, np.float32(1.0), amax).astype(np.float32)
    best_scale = amax / np.float32(half - 1)
    ratios = np.linspace(0.7, half / (half - 1), coarse, dtype=np.float32)
    step = ratios[1] - ratios[0]
    rows = max(1, chunk_elements // max(1, w[0].size))
    for start in range(0, w.shape[0], rows):
        part, top = w[start : start + rows].astype(np.float32, copy=False), amax[start : start + rows]
        best = _ScaleSearch(part, top, half, best_scale[start : start + rows])
        for ratio in ratios:
            best.attempt(ratio)
        centre = best.ratio.copy()
        for offset in (-2 / 3, -1 / 3, 1 / 3, 2 / 3):
            best.attempt(centre + np.float32(offset) * step)
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
    fidelity: str = ""
    """A target such as 'cosine>=0.995': the most sensitive layers go to 8 bits, then float, until it holds."""
    eval_samples: int = 8
    """How many calibration samples judge fidelity in the search."""
    metric: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """Python API: a callable (float outputs, quantized outputs) -> score compared with the fidelity value."""
    accuracy_level: int = 0
    """MatMulNBits' compute type: 0 dequantizes to float (exact); 4 also quantizes activations to int8 per block
    (on MiniLM 8-bit: 3.4x faster, cosine 0.99973 instead of 0.99994). The qdq form leaves it to onnxruntime."""

    def __post_init__(self) -> None:
        from onnxpress.irpasses.quant.sensitivity import resolve_metric

        if self.block < 16 or self.block & (self.block - 1):
            raise ValueError(f"block must be a power of two >= 16, got {self.block}")
        if self.fidelity and self.metric is None:
            resolve_metric(self.fidelity, None)  # a bad target fails when the pipeline is built, not after calibration

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        form = self.format if self.format != "auto" else ("nbits" if ctx.target == "ort" else "qdq")
        self._check_format(model, ctx, form)
        method = self.method if self.method != "auto" else ("gptq" if ctx.samples is not None else "rtn")
        from onnxpress.irpasses.quant.gemm_split import split_gemms

        split_gemms(model, self.min_elements)  # Linear layers exported or fused as Gemm
        matmuls, gathers = self._layers(model)
        searching = (bool(self.fidelity) or self.metric is not None) and bool(matmuls or gathers)
        widths = sorted({self.bits, 8}) if searching else [self.bits]
        fit: Any = None
        judged: list[dict] = []
        if method == "gptq" or searching:
            from onnxpress.irpasses.quant.data import calibration_samples, fit_and_judge

            samples = calibration_samples(ctx, model, False, self.name)
            fit, judged, disjoint = fit_and_judge(samples, self.eval_samples) if searching else (samples, [], True)
            if not disjoint:
                ctx.logger.warning(
                    "weight-only: fewer than %d calibration samples, so the fidelity search judges on samples GPTQ "
                    "was fitted to (optimistic)", 2 * self.eval_samples,
                )
        self._codes = self._quantize_all(model, ctx, matmuls, gathers, method, widths, fit)
        levels = self._search(model, ctx, form, matmuls + gathers, judged) if searching else None
        saved, skipped = self._emit(model, form, levels)
        if matmuls or gathers:
            remove_unused(model)  # drops the float weights now unused, in bodies too
        kept = Counter(levels.values()) if levels else Counter()
        return self.result(
            model, bool(matmuls or gathers), method=method, format=form, matmuls_quantized=len(matmuls),
            tables_quantized=len(gathers) - len(skipped), tables_skipped=skipped, bytes_saved=int(saved),
            at_8_bits=kept.get(REDUCED, 0) if self.bits != 8 else 0, kept_float=kept.get(FLOAT, 0),
        )

    def _layers(self, model: ir.Model) -> tuple[list[ir.Node], list[ir.Node]]:
        # If/Loop/Scan bodies too: GPTQ's statistics reach their inputs through values passed out of the bodies
        # (``bodies``), search trials run whole models
        nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
        matmuls = [n for n in nodes if self._weight(n, "MatMul", 1) is not None]
        gathers = [n for n in nodes if self.embeddings and self._weight(n, "Gather", 0) is not None]
        return matmuls, gathers

    def _quantize_all(
        self, model: ir.Model, ctx: PassContext, matmuls: list[ir.Node], gathers: list[ir.Node], method: str, widths: list[int],
        samples: Any,
    ) -> dict[tuple[int, int], BlockQuantized]:
        """Codes of every weight at every bit width needed, by (id of the float tensor, bits): computed once,
        so the fidelity search's trials (clones sharing the tensors) only emit nodes."""
        grams = self._gram_matrices(model, ctx, matmuls, samples) if method == "gptq" and matmuls else {}
        readers = Counter(n.inputs[0].name for n in matmuls)
        plans: dict[str, Prepared] = {}
        codes: dict[tuple[int, int], BlockQuantized] = {}
        with ctx.progress("weight-only", len(matmuls) + len(gathers)) as bar:
            for node in matmuls:
                source, tensor = node.inputs[0].name, node.inputs[1].const_value
                if source in grams and source not in plans:  # factored when first needed, dropped after its last reader
                    plans[source] = self._prepare(grams.pop(source))
                weight = tensor.numpy().astype(np.float32)
                for bits in widths:
                    codes[(id(tensor), bits)] = quantize_blocks(weight, bits, self.block, self.symmetric, self.search, plans.get(source))
                readers[source] -= 1
                if not readers[source]:
                    plans.pop(source, None)
                bar.advance()
            for node in gathers:
                tensor = node.inputs[0].const_value
                if tensor.shape[1] % self.block == 0:  # tables need whole blocks along each row
                    table = tensor.numpy().T.astype(np.float32)
                    for bits in widths:
                        codes[(id(tensor), bits)] = quantize_blocks(table, bits, self.block, self.symmetric, self.search)
                bar.advance()
        self._pinned = [n.inputs[1].const_value for n in matmuls] + [n.inputs[0].const_value for n in gathers]  # ids stay valid
        return codes

    def _emit(self, model: ir.Model, form: str, levels: dict[str, str] | None) -> tuple[int, list[str]]:
        """Replace every quantized layer of ``model`` (the pass's model or a search trial's clone) at its level:
        full = ``bits``, reduced = 8 bits, float = untouched (absent from ``levels``: float)."""
        matmuls, gathers = self._layers(model)
        emitters = {bits: (_NBitsEmitter if form == "nbits" else _QDQEmitter)(model, self, bits) for bits in {self.bits, 8}}
        saved, skipped = 0, []
        for node, index in [(n, 1) for n in matmuls] + [(n, 0) for n in gathers]:
            level = FULL if levels is None else levels.get(node.name, FLOAT)
            if level == FLOAT:
                continue
            bits = self.bits if level == FULL else 8
            tensor = node.inputs[index].const_value
            q = self._codes.get((id(tensor), bits))
            if q is None:
                skipped.append(node.name)
                continue
            emit = emitters[bits]
            saved += emit.matmul(node, q) if index == 1 else emit.gather(node, q)
        return saved, skipped

    def _search(self, model: ir.Model, ctx: PassContext, form: str, layers: list[ir.Node], samples: list[dict]) -> dict[str, str]:
        """Mixed precision: the most sensitive layers go to 8 bits (or float) until the fidelity target holds,
        judged on ``samples`` (held out from GPTQ's statistics when there are enough)."""
        from onnxpress.irpasses.quant import sensitivity

        metric, threshold, text = sensitivity.resolve_metric(self.fidelity, self.metric)
        sizes = {n.name: n.inputs[1 if n.op_type == "MatMul" else 0].const_value.size for n in layers}
        result = sensitivity.search(
            model, ctx, [(n.name, n.op_type) for n in layers], lambda clone, levels: self._emit(clone, form, dict(levels)) and None,
            samples, metric, threshold, reduced=self.bits != 8, sizes=sizes,
        )
        sensitivity.record(ctx, result, text)
        return result.levels

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

    def _gram_matrices(self, model: ir.Model, ctx: PassContext, matmuls: list[ir.Node], samples: Any) -> dict[str, np.ndarray]:
        from onnxpress.irpasses.quant.gptq import gram_matrices

        return gram_matrices(model, ctx, matmuls, samples)

    def _prepare(self, hessian: np.ndarray) -> Prepared:
        """GPTQ's factored inverse, with K padded to whole blocks by dead inputs (their weights are zeroed)."""
        k = len(hessian)
        padded = np.zeros((-(-k // self.block) * self.block,) * 2)
        padded[:k, :k] = hessian
        return prepare(padded, self.damp, self.act_order)


class _NBitsEmitter:
    """onnxruntime's contrib ops: MatMulNBits for MatMuls, GatherBlockQuantized for embedding tables."""

    def __init__(self, model: ir.Model, options: WeightOnly, bits: int) -> None:
        self.model, self.o, self.bits = model, options, bits
        model.opset_imports.setdefault("com.microsoft", 1)

    def matmul(self, node: ir.Node, q: BlockQuantized) -> int:
        o, bits, weight_value = self.o, self.bits, node.inputs[1]
        weight = weight_value.const_value
        k, n = weight.shape
        dtype = weight.dtype.numpy()
        base = weight_value.name or node.name
        inputs = [node.inputs[0], self._constant(f"{base}_q{bits}", q.packed), self._constant(f"{base}_scales", q.scales.astype(dtype))]
        if q.zero_points is not None:
            inputs.append(self._constant(f"{base}_zero_points", q.zero_points))
        attributes = {"K": k, "N": n, "bits": bits, "block_size": o.block, "accuracy_level": o.accuracy_level}
        replace_node(node.graph, node, [ir.node("MatMulNBits", inputs, domain="com.microsoft", name=f"{node.name or base}_nbits", attributes=attributes)])
        return weight.nbytes - q.packed.nbytes - q.scales.nbytes

    def gather(self, node: ir.Node, q: BlockQuantized) -> int:
        o, bits, table_value = self.o, self.bits, node.inputs[0]
        table = table_value.const_value
        rows, cols = table.shape
        base = table_value.name or node.name
        blocks = cols // o.block
        inputs = [
            self._constant(f"{base}_q{bits}", q.packed.reshape(rows, -1)), node.inputs[1],
            self._constant(f"{base}_scales", q.scales.reshape(rows, blocks).astype(table.dtype.numpy())),
        ]
        if q.zero_points is not None:
            inputs.append(self._constant(f"{base}_zero_points", q.zero_points.reshape(rows, -1)))
        attributes = {"gather_axis": 0, "quantize_axis": 1, "block_size": o.block, "bits": bits}
        replace_node(node.graph, node, [ir.node("GatherBlockQuantized", inputs, domain="com.microsoft", name=f"{node.name or base}_q", attributes=attributes)])
        return table.nbytes - q.packed.nbytes - q.scales.nbytes

    def _constant(self, name: str, array: np.ndarray) -> ir.Value:
        return add_constant(self.model.graph, name, array)


class _QDQEmitter(_NBitsEmitter):
    """Standard ONNX: int4/int8 weight -> DequantizeLinear(axis, block_size) -> MatMul / Gather (opset 21)."""

    def __init__(self, model: ir.Model, options: WeightOnly, bits: int) -> None:
        self.model, self.o, self.bits = model, options, bits

    def matmul(self, node: ir.Node, q: BlockQuantized) -> int:
        o, weight_value = self.o, node.inputs[1]
        weight = weight_value.const_value
        k = weight.shape[0]
        codes, scales, zeros = q.codes(self.bits, o.block)  # [N, blocks * block], [N, blocks]
        dq = self._dequantize(weight_value.name or node.name, codes[:, :k].T, scales.T, None if zeros is None else zeros.T, 0, weight.dtype.numpy())
        node.replace_input_with(1, dq)
        return weight.nbytes - q.packed.nbytes - q.scales.nbytes

    def gather(self, node: ir.Node, q: BlockQuantized) -> int:
        o, table_value = self.o, node.inputs[0]
        table = table_value.const_value
        cols = table.shape[1]
        codes, scales, zeros = q.codes(self.bits, o.block)  # rows are the table's rows
        # Gather the rows first, then dequantize only them: a DequantizeLinear of the whole table is not folded
        # by onnxruntime and ran every call (3x slower than float on MiniLM). Gather takes no int4 at opset 21,
        # so the codes are stored one per byte (int8/uint8 holding 4-bit values; the size win is halved).
        base = table_value.name or node.name
        signed = zeros is None
        stored = (codes[:, :cols].astype(np.int16) - 2 ** (self.bits - 1)).astype(np.int8) if signed else codes[:, :cols].astype(np.uint8)
        ids = node.inputs[1]
        parts = [(f"{base}_q{self.bits}", stored), (f"{base}_scales", scales.astype(table.dtype.numpy()))]
        if not signed:
            parts.append((f"{base}_zero_points", zeros.astype(np.uint8)))
        gathers = [ir.node("Gather", [self._constant(name, array), ids], attributes={"axis": 0}, name=f"{name}_gather") for name, array in parts]
        dq = ir.node(
            "DequantizeLinear", [g.outputs[0] for g in gathers], name=f"{base}_dequantize", attributes={"axis": -1, "block_size": o.block}
        )
        replace_node(node.graph, node, [*gathers, dq])
        return table.nbytes - stored.nbytes - scales.nbytes

    def _dequantize(self, base: str, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, axis: int, dtype: np.dtype) -> ir.Value:
        import ml_dtypes

        o, bits = self.o, self.bits
        half = 2 ** (bits - 1)
        if zeros is None:  # symmetric: signed codes, zero point 0
            store = {4: ml_dtypes.int4, 8: np.int8}[bits]
            values = (codes.astype(np.int16) - half).astype(store)
        else:
            store = {4: ml_dtypes.uint4, 8: np.uint8}[bits]
            values = codes.astype(store)
        inputs = [self._constant(f"{base}_q{bits}", values), self._constant(f"{base}_scales", scales.astype(dtype))]
        if zeros is not None:
            inputs.append(self._constant(f"{base}_zero_points", zeros.astype(store)))
        dq = ir.node("DequantizeLinear", inputs, name=f"{base}_dequantize", attributes={"axis": axis, "block_size": o.block})
        self.model.graph.insert_before(self.model.graph.node(0), dq)
        return dq.outputs[0]
