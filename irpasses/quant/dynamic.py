"""dynamic-quant: int8 MatMul weights with activations quantized at run time, and int8 embedding tables.

For a MatMul with a constant [K, N] weight: the weight becomes int8, symmetric per output column, and the
activation is quantized per call by ``DynamicQuantizeLinear`` (uint8, its own range each run), in standard
ops: DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale_a * scale_w). onnxruntime fuses that chain
into its DynamicQuantizeMatMul kernel (u8s8, VNNI where the CPU has it); other runtimes run it as written.
No calibration data is needed, which suits transformers whose activation ranges vary per token.

A ``Gather`` from a large constant table (word embeddings: 53 % of MiniLM's parameters) is stored as int8 rows
with one scale per row: Gather(rows) -> Cast -> Mul(Gather(scales)), exact up to the row's rounding.
Layers named by ``fidelity`` search (see sensitivity) stay float when a target is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.cleanup.dead_code import remove_unused
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED, TOPO_SORTED
from onnxpress.irpasses.quant import cpu_target
from onnxpress.irpasses.quant.cpu_target import IntegerTarget, integer_target
from onnxpress.irpasses.quant.qparams import (
    QParams,
    add_constant,
    folded_int8_weight,
    quantize_weight,
    replace_node,
)
from onnxpress.irpasses.quant.sensitivity import FLOAT, FULL, REDUCED


def _const_matrix(value: ir.Value | None, min_elements: int) -> bool:
    """Whether ``value`` is a constant 2-D float weight of at least ``min_elements`` (from its metadata alone:
    reading a file-backed tensor's bytes to ask was 3 of MiniLM auto's 41 s, once per search trial)."""
    if value is None or value.const_value is None or value.is_graph_input():
        return False
    tensor = value.const_value
    return tensor.dtype == ir.DataType.FLOAT and len(tensor.shape) == 2 and tensor.size >= min_elements


def _nodes(model: ir.Model, nested: bool) -> Any:
    return ir.traversal.RecursiveGraphIterator(model.graph) if nested else model.graph


def matmul_layers(model: ir.Model, min_elements: int, nested: bool = False) -> list[ir.Node]:
    """MatMuls with a constant 2-D float weight; ``nested``: also inside If/Loop/Scan bodies."""
    return [
        n for n in _nodes(model, nested)
        if n.op_type == "MatMul" and n.domain in ("", "ai.onnx") and _const_matrix(n.inputs[1], min_elements)
        and n.inputs[0] is not None and n.inputs[0].dtype in (ir.DataType.FLOAT, None)
    ]


def embedding_layers(model: ir.Model, min_elements: int, nested: bool = False) -> list[ir.Node]:
    return [
        n for n in _nodes(model, nested)
        if n.op_type == "Gather" and n.domain in ("", "ai.onnx") and n.attributes.get_int("axis", 0) == 0
        and _const_matrix(n.inputs[0], min_elements)
    ]


class _Builder:
    def __init__(
        self, model: ir.Model, cache: dict[tuple[int, str], tuple[Any, np.ndarray, np.ndarray]] | None = None,
        integer: IntegerTarget | None = None,
    ) -> None:
        self.model, self.graph = model, model.graph
        self.integer = integer or integer_target(None, "portable")
        """Which weight range the integer kernels take, and whether weight-only layers stay DequantizeLinear."""
        self.cache = {} if cache is None else cache
        """Quantized weights by id of the float tensor: the fidelity search quantizes clones that share
        tensors, so each weight is quantized once, not once per trial (MiniLM: its 47 MB embedding table,
        with ~190 MB of temporaries each time, was the search's peak memory)."""

    def quantized(self, tensor: ir.TensorProtocol, make: Any, variant: str = "") -> tuple[np.ndarray, np.ndarray]:
        """``make(array)``'s codes for ``tensor``, computed once per variant (e.g. smoothed)."""
        key = (id(tensor), variant)
        if key not in self.cache:  # the tensor is kept with its codes, so its id cannot be reused meanwhile
            self.cache[key] = (tensor, *make(tensor.numpy()))
        return self.cache[key][1:]

    def constant(self, name: str, array: np.ndarray) -> ir.Value:
        return add_constant(self.graph, name, array)

    def replace(self, node: ir.Node, new_nodes: list[ir.Node]) -> None:
        """In the node's own graph (a body, for nested layers); new constants stay in the main graph, which
        bodies may read as outer-scope values."""
        replace_node(node.graph, node, new_nodes)


def _int8_columns(
    builder: _Builder, node: ir.Node, rows: np.ndarray | None = None, variant: str = "scaled rows", unsigned: bool = False
) -> tuple[str, ir.Value, ir.Value, ir.Value, int]:
    """The MatMul's weight (times ``rows`` per row) as 8-bit codes per column: (name base, codes, zero points,
    scales, bytes saved). Symmetric int8 within +-127, or with ``unsigned`` the same codes + 128 as uint8 with
    zero point 128: a u8 x u8 MatMulInteger, which onnxruntime computes in 16-bit products that cannot saturate
    (see cpu_target), at full 8-bit precision."""
    tensor = node.inputs[1].const_value

    def columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if rows is not None:
            weight = weight * rows[:, None]
        q, qp = quantize_weight(weight, axis=1, search=False)  # clipping transformer weight outliers costs retrieval
        return q, qp.scale.astype(np.float32)

    q, scale = builder.quantized(tensor, columns, variant if rows is not None else "")
    base = node.name or node.outputs[0].name or "matmul"
    if unsigned:
        wq = builder.constant(f"{base}_weight_uint8", (q.astype(np.int16) + 128).astype(np.uint8))
        wzp = builder.constant(f"{base}_weight_zero_point", np.full(q.shape[1], 128, dtype=np.uint8))
    else:
        wq = builder.constant(f"{base}_weight_int8", q)
        wzp = builder.constant(f"{base}_weight_zero_point", np.zeros(q.shape[1], dtype=np.int8))
    wscale = builder.constant(f"{base}_weight_scale", scale)
    return base, wq, wzp, wscale, tensor.nbytes - q.nbytes - scale.nbytes


@dataclasses.dataclass(frozen=True)
class InputScaling:
    """How the fully quantized layers on one input x read it: x * ``inverse`` (one Mul they share), their
    weight rows times ``rows``; the ``outliers`` channels have inverse and rows 0 and go through a small
    float MatMul instead (LLM.int8()'s decomposition: MiniLM's FFN inputs have 1-2 channels 10-20x the
    median channel, which would otherwise set the per-tensor int8 step for all 384/1536)."""

    rows: np.ndarray
    inverse: np.ndarray
    outliers: np.ndarray

    @classmethod
    def make(cls, s: np.ndarray, outliers: np.ndarray) -> InputScaling:
        rows, inverse = s.astype(np.float32).copy(), (1.0 / s).astype(np.float32)
        rows[outliers] = inverse[outliers] = 0.0
        return cls(rows, inverse, outliers.astype(np.int64))


def outlier_channels(act_max: np.ndarray, ratio: float) -> np.ndarray:
    """Channels whose max |x| exceeds ``ratio`` times the median channel's, largest first, at most 1 in 64."""
    if ratio <= 0 or act_max.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-act_max, kind="stable")
    over = order[act_max[order] > ratio * float(np.median(act_max))]
    return np.sort(over[: max(1, act_max.size // 64)])


def quantize_matmul(builder: _Builder, node: ir.Node, scaled: tuple[ir.Value, InputScaling, list[ir.Node]] | None = None) -> int:
    """Rewrite one MatMul; returns the bytes saved. ``scaled``: (x * inverse, its InputScaling, nodes that
    compute x * inverse and are not in the graph yet) to quantize instead of x."""
    x = node.inputs[0]
    source, scaling, before = (x, None, []) if scaled is None else scaled
    rows = None if scaling is None else scaling.rows
    base, wq, wzp, wscale, saved = _int8_columns(builder, node, rows, unsigned=builder.integer.unsigned_matmul_integer)
    dql = ir.node("DynamicQuantizeLinear", [source], num_outputs=3, name=f"{base}_DynamicQuantizeLinear")
    mmi = ir.node("MatMulInteger", [dql.outputs[0], wq, dql.outputs[2], wzp], name=f"{base}_MatMulInteger")
    cast = ir.node("Cast", [mmi.outputs[0]], attributes={"to": ir.DataType.FLOAT}, name=f"{base}_Cast")
    scale = ir.node("Mul", [dql.outputs[1], wscale], name=f"{base}_scale")
    out = ir.node("Mul", [cast.outputs[0], scale.outputs[0]], name=f"{base}_rescale")
    nodes = [*before, dql, mmi, cast, scale, out]
    if scaling is not None and scaling.outliers.size:
        saved -= _add_outlier_path(builder, node, base, scaling.outliers, nodes)
    builder.replace(node, nodes)
    return saved


def _add_outlier_path(builder: _Builder, node: ir.Node, base: str, outliers: np.ndarray, nodes: list[ir.Node]) -> int:
    """Append Gather(x, outliers) -> MatMul(float rows) -> Add(last output) to ``nodes``; returns its bytes."""
    rows = node.inputs[1].const_value.numpy()[outliers]
    index = builder.constant(f"{base}_outlier_channels", outliers)
    gather = ir.node("Gather", [node.inputs[0], index], attributes={"axis": -1}, name=f"{base}_outliers")
    float_part = ir.node("MatMul", [gather.outputs[0], builder.constant(f"{base}_outlier_rows", rows)], name=f"{base}_outliers_float")
    nodes += [gather, float_part, ir.node("Add", [nodes[-1].outputs[0], float_part.outputs[0]], name=f"{base}_with_outliers")]
    return rows.nbytes + outliers.nbytes


def weight_only_matmul(builder: _Builder, node: ir.Node, masked: tuple[ir.Value, np.ndarray, list[ir.Node]] | None = None) -> int:
    """int8 per-column weight with float activations. On a CPU with VNNI it stays behind a DequantizeLinear:
    onnxruntime turns DQ -> MatMul into MatMulNBits (8-bit, accuracy level 4: activations quantized per block of
    32, far finer than per tensor); measured on MiniLM (AVX-512 VNNI) against int8 weights folded to float at
    load (Cast*scale): retrieval 0.978 vs 0.969, 3.53 vs 4.33 ms. Without VNNI that MatMulNBits is slower than
    float (issue 13: MiniLM 1.68x float on an AVX2 EPYC), so the portable form is the folded one.
    ``masked``: (x with its outlier channels zeroed, the outlier channels, nodes computing it not yet in the
    graph): those channels' weight rows are zero in int8 and multiply in float instead, as at full level
    (MiniLM layer 0's FFN output: weight-only alone 0.99923 -> see the sensitivity table)."""
    x, outliers, before = (node.inputs[0], None, []) if masked is None else masked
    rows = None
    if outliers is not None:
        rows = np.ones(node.inputs[1].const_value.shape[0], dtype=np.float32)
        rows[outliers] = 0.0
    base, wq, wzp, wscale, saved = _int8_columns(builder, node, rows, "masked rows")
    if builder.integer.weight_only_kernel:
        weight = ir.node("DequantizeLinear", [wq, wscale, wzp], attributes={"axis": 1}, name=f"{base}_weight_DequantizeLinear")
        dequantize = [weight]
    else:  # Cast and Mul on constants: folded into a float weight when the session loads
        cast = ir.node("Cast", [wq], attributes={"to": ir.DataType.FLOAT}, name=f"{base}_weight_int8_Cast")
        weight = ir.node("Mul", [cast.outputs[0], wscale], name=f"{base}_weight_int8_dequantize")
        dequantize = [cast, weight]
    mm = ir.node("MatMul", [x, weight.outputs[0]], name=f"{base}_weight_only")
    nodes = [*before, *dequantize, mm]
    if outliers is not None:
        saved -= _add_outlier_path(builder, node, base, outliers, nodes)
    builder.replace(node, nodes)
    return saved


def _int8_rows(table: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes within +-``qmax`` and one scale per row, with one float32 temporary of the table's size."""
    scale = np.maximum(table.max(axis=1, keepdims=True), -table.min(axis=1, keepdims=True)).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1.0), scale / np.float32(qmax)).astype(np.float32)
    q = np.divide(table, scale, dtype=np.float32)
    np.rint(q, out=q)
    np.clip(q, -qmax, qmax, out=q)
    return q.astype(np.int8), scale


def quantize_embedding(builder: _Builder, node: ir.Node) -> int:
    tensor = node.inputs[0].const_value
    q, scale = builder.quantized(tensor, _int8_rows)
    base = node.name or node.outputs[0].name or "embedding"
    rows = builder.constant(f"{base}_table_int8", q)
    scales = builder.constant(f"{base}_row_scales", scale)  # [V, 1]: gathered it broadcasts over the row
    ids = node.inputs[1]
    gather_q = ir.node("Gather", [rows, ids], attributes={"axis": 0}, name=f"{base}_int8")
    gather_s = ir.node("Gather", [scales, ids], attributes={"axis": 0}, name=f"{base}_scales")
    cast = ir.node("Cast", [gather_q.outputs[0]], attributes={"to": ir.DataType.FLOAT}, name=f"{base}_Cast")
    out = ir.node("Mul", [cast.outputs[0], gather_s.outputs[0]], name=f"{base}_dequantize")
    builder.replace(node, [gather_q, gather_s, cast, out])
    return tensor.nbytes - q.nbytes - scale.nbytes


RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})


def recurrent_layers(model: ir.Model) -> list[ir.Node]:
    """LSTM/GRU/RNN nodes (any depth of If/Loop/Scan bodies) with constant float W and R, default layout."""
    def constant(value: ir.Value | None) -> bool:
        return value is not None and value.const_value is not None and value.const_value.dtype == ir.DataType.FLOAT and len(value.const_value.shape) == 3

    return [
        n for n in ir.traversal.RecursiveGraphIterator(model.graph)
        if n.op_type in RECURRENT_OPS and n.domain in ("", "ai.onnx") and n.attributes.get_int("layout", 0) == 0
        and len(n.inputs) > 2 and constant(n.inputs[1]) and constant(n.inputs[2])
    ]


def quantize_recurrent(builder: _Builder, node: ir.Node, integer_kernel: bool) -> int:
    """W [D, gates*H, I] and R [D, gates*H, H] as int8, one scale per gate row. ``integer_kernel`` (LSTM only):
    onnxruntime's com.microsoft.DynamicQuantizeLSTM (weights transposed to [D, I, 4H], activations quantized
    per call); else the standard op reading its weights through Cast and Mul, which runtimes fold at load (the
    file keeps one byte per weight; onnxruntime has no integer GRU or RNN)."""
    base = node.name or node.outputs[0].name or "lstm"
    saved = 0
    weights = []
    kernel = integer_kernel and node.op_type == "LSTM"
    qmax = builder.integer.weight_max if kernel else 127  # DynamicQuantizeLSTM multiplies u8 by s8 like MatMulInteger
    for index, label in ((1, "W"), (2, "R")):
        tensor = node.inputs[index].const_value
        directions, rows, columns = tensor.shape
        q, scale = builder.quantized(tensor, lambda w: _int8_rows(w.reshape(-1, w.shape[-1]), qmax), f"lstm rows {qmax}")
        q, scale = q.reshape(directions, rows, columns), scale.reshape(directions, rows)
        saved += tensor.nbytes - q.nbytes - scale.nbytes
        weights.append((label, q, scale))
    if kernel:
        inputs = [node.inputs[0]]
        for label, q, _ in weights:
            inputs.append(builder.constant(f"{base}_{label}_int8", np.ascontiguousarray(q.transpose(0, 2, 1))))
        inputs += [node.inputs[i] if i < len(node.inputs) else None for i in range(3, 8)]
        for label, _, scale in weights:
            inputs += [builder.constant(f"{base}_{label}_scale", scale), builder.constant(f"{base}_{label}_zero_point", np.zeros(scale.shape, np.int8))]
        attributes = {name: a.value for name, a in node.attributes.items() if name != "layout"}
        quantized = ir.node("DynamicQuantizeLSTM", inputs, attributes=attributes, domain="com.microsoft", num_outputs=len(node.outputs), name=f"{base}_int8")
        builder.model.opset_imports.setdefault("com.microsoft", 1)
        node.graph.insert_before(node, quantized)
        for old, new in zip(node.outputs, quantized.outputs):
            name = old.name
            old.replace_all_uses_with(new, replace_graph_outputs=True)
            old.name = None
            new.name, new.type, new.shape = name, old.type, old.shape
        node.graph.remove(node, safe=True)
        return saved
    for (_, q, scale), index in zip(weights, (1, 2)):
        qp = QParams(scale[..., None], np.zeros_like(scale[..., None], dtype=np.int8), ir.DataType.INT8)
        node.replace_input_with(index, folded_int8_weight(builder.graph, node, node.inputs[index], q, qp, axis=None))
    return saved


def quantize_recurrents(model: ir.Model, integer_kernel: bool, exclude: list[str], integer: IntegerTarget | None = None) -> tuple[int, int]:
    """Every LSTM/GRU/RNN with constant weights (see ``quantize_recurrent``), not excluded: (how many, bytes
    saved). For passes without a builder of their own (qdq)."""
    from onnxpress.irpasses.quant.placement import excluded_by

    builder, count, saved = _Builder(model, integer=integer), 0, 0
    for node in recurrent_layers(model):
        if excluded_by(node, exclude) is None:
            saved += quantize_recurrent(builder, node, integer_kernel)
            count += 1
    return count, saved


@dataclasses.dataclass
class DynamicQuant(Pass):
    """int8 MatMul weights with run-time activation quantization; int8 embedding tables (no calibration)."""

    name = "dynamic-quant"
    lossy = True
    needs = frozenset({CONSTANTS_LIFTED})
    keeps = frozenset({TOPO_SORTED, CONSTANTS_LIFTED})
    embeddings: bool = True
    """Also store large Gather tables as int8 rows."""
    recurrent: bool = True
    """Also store LSTM/GRU/RNN weights as int8 (one scale per gate row): onnxruntime's DynamicQuantizeLSTM for
    LSTMs under ``--target ort``, else the standard op reading them through Cast and Mul (folded at load)."""
    min_elements: int = 4096
    smooth: float = 0.0
    """SmoothQuant alpha for the dynamically quantized layers (0: off): their inputs are divided per channel by
    s = max|x|^alpha / max|W|^(1-alpha) (from the calibration data) and the weight rows multiplied by s, so a
    per-tensor int8 range is not spent on a few outlier channels. Layers the fidelity search sets to weight-only
    or float keep the original input and weights (smoothing only helps the activation's rounding and makes
    the weights' worse). MiniLM, 320 held-out sentences, mean cosine / retrieval agreement: 0.9940 / 0.925
    plain, 0.9980 / 0.966 at 0.8, 0.9992 / 0.978 at 0.5 with ``outliers=6`` (0.9984 / 0.956 outliers alone)."""
    outliers: float = 0.0
    """Outlier channels (0: off): input channels whose calibration max |x| exceeds this many times the median
    channel's (at most 1 in 64) skip int8 and multiply their weight rows in float, so they no longer set
    the per-tensor int8 step of the others (see InputScaling)."""
    exclude: list[str] = dataclasses.field(default_factory=list)
    """Op types or regular expressions over node names to keep float."""
    fidelity: str = ""
    """A target such as 'cosine>=0.995': the most sensitive MatMuls stay float until it holds (needs --calib)."""
    eval_samples: int = 8
    sensitive: Literal["weight-only", "float"] = "weight-only"
    """What the layers the fidelity search takes out of dynamic quantization become: int8 weights with float
    activations (size kept, activation error gone) or plain float."""
    metric: Any = dataclasses.field(default=None, metadata={"python_only": True})

    def __post_init__(self) -> None:
        from onnxpress.irpasses.quant.sensitivity import resolve_metric

        if self.fidelity and self.metric is None:
            resolve_metric(self.fidelity, None)  # a bad target fails when the pipeline is built, not after calibration
        if not 0.0 <= self.smooth <= 1.0:
            raise PassOptionError(f"dynamic-quant: smooth={self.smooth} is not a SmoothQuant alpha", hint="use 0 (off) to 1; 0.5 is the usual")
        if self.outliers < 0:
            raise PassOptionError(f"dynamic-quant: outliers={self.outliers} is negative", hint="0 turns it off; 6 takes channels above 6x the median")

    def _layers(self, model: ir.Model) -> list[ir.Node]:
        from onnxpress.irpasses.quant.placement import excluded_by

        # bodies too: smoothing and outlier statistics reach their inputs through values passed out of the
        # bodies (``bodies``), and search trials run whole models
        return [n for n in matmul_layers(model, self.min_elements, nested=True) if excluded_by(n, self.exclude) is None]

    def _quantize(self, model: ir.Model, levels: Mapping[str, str] | None) -> tuple[int, int, int, int]:
        """Quantize every layer (``levels`` None) or each at its level: full (dynamic), reduced (weight-only);
        recurrent layers always. Returns (bytes saved, MatMuls, tables, recurrent layers)."""
        from onnxpress.irpasses.quant.placement import excluded_by
        from onnxpress.irpasses.quant.smooth_quant import smoothing_mul

        builder = _Builder(model, self._cache, self._integer)
        saved = matmuls = reduced = tables = recurrents = 0
        shared: dict[tuple[str, int], ir.Value] = {}

        def scaled_input(x: ir.Value, factors: np.ndarray, label: str, graph: ir.Graph) -> tuple[ir.Value, list[ir.Node]]:
            """x * factors, one Mul per input, label and graph shared by its layers (a body cannot read a Mul placed
            in another body): (value, the Mul if it is new)."""
            key = f"{x.name}_{label}"
            if (key, id(graph)) in shared:
                return shared[key, id(graph)], []
            copies = sum(k == key for k, _ in shared)  # the same input read in another body: another Mul
            mul = smoothing_mul(model.graph, x, factors, factors, name=f"{key}_{copies}" if copies else key)
            shared[key, id(graph)] = mul.outputs[0]
            return mul.outputs[0], [mul]

        for node in self._layers(model):
            level = FULL if levels is None else levels.get(node.name, FLOAT)
            scaling = self._scaling.get(node.inputs[0].name)
            if level == FULL:
                if scaling is None:
                    saved += quantize_matmul(builder, node)
                else:
                    value, before = scaled_input(node.inputs[0], scaling.inverse, "smooth", node.graph)
                    saved += quantize_matmul(builder, node, (value, scaling, before))
                matmuls += 1
            elif level == REDUCED:
                reduced += 1
                if scaling is None or not scaling.outliers.size:
                    saved += weight_only_matmul(builder, node)
                else:  # unsmoothed, only the outlier channels masked
                    value, before = scaled_input(node.inputs[0], (scaling.rows != 0).astype(np.float32), "outlier_mask", node.graph)
                    saved += weight_only_matmul(builder, node, (value, scaling.outliers, before))
        if self.embeddings:
            for node in embedding_layers(model, self.min_elements, nested=True):
                saved += quantize_embedding(builder, node)
                tables += 1
        if self.recurrent:
            for node in [n for n in recurrent_layers(model) if excluded_by(n, self.exclude) is None]:
                saved += quantize_recurrent(builder, node, integer_kernel=self._target == "ort")
                recurrents += 1
        if matmuls or reduced or tables or recurrents:
            remove_unused(model)  # drops the float weights now unused, in bodies too
        return saved, matmuls, tables, recurrents

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        self._cache: dict[tuple[int, str], tuple[Any, np.ndarray, np.ndarray]] = {}
        self._target = ctx.target
        self._integer = cpu_target.from_context(ctx)
        from onnxpress.irpasses.quant.gemm_split import split_gemms

        split_gemms(model, self.min_elements, self.exclude)  # Linear layers exported or fused as Gemm
        self._scaling = self._plan_scaling(model, ctx) if self.smooth or self.outliers else {}
        levels = None
        if self.fidelity or self.metric is not None:
            levels = self._search(model, ctx)
        saved, matmuls, tables, recurrents = self._quantize(model, levels)
        if not (matmuls or tables or recurrents):
            return self.result(model, False)
        return self.result(model, True, matmuls_quantized=matmuls, embeddings_quantized=tables, recurrent_quantized=recurrents, bytes_saved=int(saved))

    def weights_only(self, model: ir.Model, ctx: PassContext) -> int:
        """Every layer at the reduced level (int8 weights, float activations; folded to float at load unless the
        CPU has VNNI), tables and recurrent layers as usual: auto-quant's fallback when dynamic int8 is not
        faster. Returns the bytes saved."""
        self._cache, self._target, self._scaling = {}, ctx.target, {}
        self._integer = cpu_target.from_context(ctx)
        return self._quantize(model, dict.fromkeys((n.name for n in self._layers(model)), REDUCED))[0]

    def _plan_scaling(self, model: ir.Model, ctx: PassContext) -> dict[str, InputScaling]:
        """Per input of the layers: smoothing factors and outlier channels, from one calibration pass."""
        from onnxpress.irpasses.quant.bodies import shared_names
        from onnxpress.irpasses.quant.smooth_quant import (
            channel_maxima,
            input_groups,
            smoothing_factors,
            weight_row_maxima,
        )

        ambiguous = shared_names(model)  # a name two values carry (sibling branches) would mix their statistics
        groups = input_groups([n for n in self._layers(model) if n.inputs[0].name and n.inputs[0].name not in ambiguous])
        plans = {}
        for name, act_max in channel_maxima(model, ctx, groups, self.name).items():
            s = smoothing_factors(act_max, weight_row_maxima(groups[name][1]), self.smooth) if self.smooth else np.ones(act_max.size, np.float32)
            outliers = outlier_channels(act_max, self.outliers)
            if outliers.size or not np.all(s == 1.0):
                plans[name] = InputScaling.make(s, outliers)
        return plans

    def _search(self, model: ir.Model, ctx: PassContext) -> dict[str, str]:
        from onnxpress.irpasses.quant import sensitivity
        from onnxpress.irpasses.quant.data import calibration_samples

        metric, threshold, text = sensitivity.resolve_metric(self.fidelity, self.metric)
        samples = sensitivity.first_samples(calibration_samples(ctx, model, False, self.name), self.eval_samples)
        nodes = self._layers(model)
        result = sensitivity.search(
            model, ctx, [(n.name, n.op_type) for n in nodes], lambda clone, levels: self._quantize(clone, levels) and None,
            samples, metric, threshold, reduced=self.sensitive == "weight-only",
            # weight elements ~ multiply-adds per token: layers taken out are won back for speed, largest first
            sizes={n.name: n.inputs[1].const_value.size for n in nodes},
        )
        sensitivity.record(ctx, result, text)
        return result.levels
