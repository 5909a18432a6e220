"""cluster: weight sharing without retraining. Every MatMul weight and embedding table takes one of 2**bits
values per column (or per tensor), found by 1-D k-means (``kmeans.py``), optionally weighted by how much each
input channel matters on the calibration data (E[x_k^2], the diagonal of the layer's input Hessian, as
SqueezeLLM weighs its clusters).

Forms:
- portable (standard ONNX): the codes stored as uint4 (opset >= 21; uint8 below) and a float codebook;
  ``Cast -> Add(column offsets) -> Gather(codebook)`` rebuilds a MatMul weight, which onnxruntime folds into a
  constant when the session loads (dense speed, 8x smaller file at 4 bits). A table's rows are gathered as
  codes first and only the gathered rows looked up, so the table stays compressed at run time.
- ``--target ort``: MatMuls whose codebook GEMM (``onnxpress.LutMatMul``, exact for the clustered weight) times
  faster on this machine than dense run it, compressed in memory; the rest take the portable form.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.cleanup.dead_code import remove_unused
from onnxpress.irpasses.clustering.kmeans import kmeans_columns, kmeans_tensor
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED
from onnxpress.irpasses.quant.placement import excluded_by
from onnxpress.irpasses.quant.qparams import add_constant


class MeanSquare:
    """Streaming E[x^2] per channel of the last axis."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def update(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float64)
        x = np.where(np.isfinite(x), x, 0).reshape(-1, x.shape[-1])
        squares = (x * x).sum(axis=0)
        self.total = squares if self.total is None else self.total + squares
        self.count += x.shape[0]

    @property
    def value(self) -> np.ndarray:
        assert self.total is not None
        return self.total / max(self.count, 1)


@dataclasses.dataclass
class Clustered:
    codes: np.ndarray  # [K, N] uint8
    book: np.ndarray  # [1 | N, 2**bits] float32

    def dense(self) -> np.ndarray:
        columns = np.arange(self.codes.shape[1])
        return (self.book[0][self.codes] if self.book.shape[0] == 1 else self.book[columns, self.codes]).astype(np.float32)


@dataclasses.dataclass
class Cluster(Pass):
    """Cluster MatMul weights and embedding tables to 2**bits shared values per column or tensor."""

    name = "cluster"
    lossy = True
    needs = frozenset({CONSTANTS_LIFTED})
    bits: int = 4
    scope: Literal["channel", "tensor"] = "channel"
    """channel: one codebook per output column of a MatMul weight and per row of an embedding table (a
    token's vector); tensor: one for the whole weight."""
    method: Literal["auto", "kmeans", "weighted", "gptq"] = "auto"
    """weighted: MatMul clusters weigh each input channel by E[x^2] on the calibration data; gptq: that
    codebook, then rows rounded to it one at a time with GPTQ's error feedback (E[x xT]); auto: gptq when
    calibration data is given, else kmeans."""
    embeddings: bool = True
    exclude: list[str] = dataclasses.field(default_factory=list)
    """Op types or regexes over node names that stay float."""
    min_elements: int = 4096
    iterations: int = 25
    form: Literal["auto", "portable", "lut"] = "auto"
    """auto: LutMatMul where it times faster (--target ort), else portable; lut: LutMatMul for every MatMul."""
    fidelity: str = ""
    """A target such as 'cosine>=0.999': the most sensitive layers get 8-bit codebooks (or stay float) until it
    holds, judged on the last ``eval_samples`` calibration samples (left out of the statistics)."""
    eval_samples: int = 8
    book_dtype: Literal["float16", "float32"] = "float16"
    """Codebook entries: float16 halves what a 16-entry book per column or row costs (MiniLM's table: 64 B of
    fp32 entries per 192 B of codes)."""
    metric: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """Python API: a callable (float outputs, clustered outputs) -> score compared with the fidelity value."""

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise PassOptionError(f"cluster: bits={self.bits} must be in 2..8", hint="e.g. cluster{bits=4}")
        if self.form == "lut" and self.bits > 4:
            raise PassOptionError(f"cluster: form=lut needs bits <= 4 (LutMatMul's codes), got {self.bits}")
        if self.iterations < 1:
            raise PassOptionError(f"cluster: iterations={self.iterations} must be at least 1")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        matmuls, tables = self._layers(model)
        if not matmuls and not tables:
            return self.result(model, False, layers=0)
        searching = bool(self.fidelity) or self.metric is not None
        fit, judged = ctx.samples, []
        if searching:
            from onnxpress.irpasses.quant.data import calibration_samples, fit_and_judge

            fit, judged, disjoint = fit_and_judge(calibration_samples(ctx, model, False, self.name), self.eval_samples)
            if not disjoint:
                ctx.logger.warning("cluster: fewer than %d calibration samples: the fidelity search judges on samples "
                                   "the statistics came from (optimistic)", 2 * self.eval_samples)
        importance, grams = self._statistics(model, ctx, matmuls, fit)
        widths = sorted({self.bits, 8}) if searching else [self.bits]
        self._clusters: dict[tuple[int, int], Clustered] = {}
        with ctx.progress("clustering", len(matmuls) + len(tables)) as bar:
            for node in matmuls:
                tensor = node.inputs[1].const_value
                weight = tensor.numpy().astype(np.float32)
                source = node.inputs[0].name or ""
                for bits in widths:
                    self._clusters[(id(tensor), bits)] = self._cluster(weight, importance.get(source), grams.get(source), bits)
                bar.advance()
            for node in tables:  # a codebook per row: a gathered row keeps its own values (per-tensor: one book)
                tensor = node.inputs[0].const_value
                table = tensor.numpy().astype(np.float32)
                for bits in widths:
                    if self.scope == "tensor" or bits > 4:
                        self._clusters[(id(tensor), bits)] = self._cluster(table, None, None, bits)
                    else:
                        rows = self._cluster(np.ascontiguousarray(table.T), None, None, bits)
                        self._clusters[(id(tensor), bits)] = Clustered(np.ascontiguousarray(rows.codes.T), rows.book)
                bar.advance()
        self._pinned = [n.inputs[1].const_value for n in matmuls] + [n.inputs[0].const_value for n in tables]  # ids stay valid
        levels = self._search(model, ctx, matmuls + tables, judged) if searching else None
        uint4 = model.opset_imports.get("", 0) >= 21
        if not uint4:
            ctx.logger.info("cluster: codes stored one per byte (4-bit storage needs opset 21: convert-opset{min=21})")
        self._rows: dict[ir.Node, int] = {}
        if self.form == "auto" and ctx.target == "ort":
            from onnxpress.irpasses.lowering.legalize_kernels import layer_rows

            self._rows = layer_rows(model, ctx, matmuls)
        before, after, lut, at_8 = self._emit(model, ctx, levels, uint4, final=True)
        remove_unused(model)
        return self.result(model, True, layers=len(matmuls), tables=len(tables), lut_matmuls=lut, at_8_bits=at_8,
                           kept_float=len(matmuls) + len(tables) - len(self._emitted), bytes_before=before, bytes_after=after)

    def _emit(self, model: ir.Model, ctx: PassContext, levels: dict[str, str] | None, uint4: bool,
              final: bool) -> tuple[int, int, int, int]:
        """Replace every clustered layer of ``model`` (the pass's model or a search trial's clone) at its level:
        full = ``bits``, reduced = 8 bits, float = untouched. Search trials take the portable form (the same
        values as LutMatMul's, exactly); the final model gets LutMatMul where chosen."""
        from onnxpress.irpasses.quant.sensitivity import FLOAT, FULL

        matmuls, tables = self._layers(model)
        before = after = lut = at_8 = 0
        self._emitted = []
        for node, index in [(n, 1) for n in matmuls] + [(n, 0) for n in tables]:
            level = FULL if levels is None else levels.get(node.name or "", FLOAT)
            if level == FLOAT:
                continue
            bits = self.bits if level == FULL else 8
            tensor = node.inputs[index].const_value
            clustered = self._clusters[(id(tensor), bits)]
            before += tensor.nbytes
            at_8 += bits == 8 and self.bits != 8
            self._emitted.append(node.name)
            packed4 = uint4 and bits <= 4
            if index == 0:
                after += self._emit_table(model, node, clustered, packed4)
            elif final and bits <= 4 and self._use_lut(node, clustered, ctx):
                after += self._emit_lut(node, clustered, bits)
                lut += 1
            else:
                after += self._emit_matmul(model, node, clustered, packed4)
        return before, after, lut, at_8

    def _search(self, model: ir.Model, ctx: PassContext, layers: list[ir.Node], samples: list[dict]) -> dict[str, str]:
        from onnxpress.irpasses.quant import sensitivity

        metric, threshold, text = sensitivity.resolve_metric(self.fidelity, self.metric)
        sizes = {n.name: n.inputs[1 if n.op_type == "MatMul" else 0].const_value.size for n in layers}
        uint4 = model.opset_imports.get("", 0) >= 21
        result = sensitivity.search(
            model, ctx, [(n.name, n.op_type) for n in layers],
            lambda clone, levels: self._emit(clone, ctx, dict(levels), uint4, final=False) and None,
            samples, metric, threshold, reduced=self.bits != 8, sizes=sizes,
        )
        sensitivity.record(ctx, result, text)
        return result.levels

    # ----- choosing -------------------------------------------------------------------------------------
    def _layers(self, model: ir.Model) -> tuple[list[ir.Node], list[ir.Node]]:
        matmuls, tables = [], []
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.domain not in ("", "ai.onnx") or excluded_by(node, self.exclude) is not None:
                continue
            if node.op_type == "MatMul" and _float_matrix(node.inputs[1] if len(node.inputs) > 1 else None, self.min_elements):
                matmuls.append(node)
            elif (self.embeddings and node.op_type == "Gather" and node.attributes.get_int("axis", 0) == 0
                  and _float_matrix(node.inputs[0], self.min_elements)):
                tables.append(node)
        return matmuls, tables

    def _statistics(self, model: ir.Model, ctx: PassContext, matmuls: list[ir.Node],
                    samples: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per MatMul input name: E[x^2] per channel (weighted) or E[x xT] (gptq, whose diagonal is E[x^2])."""
        method = self.method if self.method != "auto" else ("gptq" if ctx.samples is not None else "kmeans")
        if method == "kmeans" or not matmuls:
            return {}, {}
        from onnxpress.irpasses.quant.data import calibration_samples

        if samples is None:
            samples = calibration_samples(ctx, model, False, self.name)
        if method == "gptq":
            from onnxpress.irpasses.quant.gptq import gram_matrices

            grams = gram_matrices(model, ctx, matmuls, samples)
            return {name: np.diag(h).copy() for name, h in grams.items()}, grams
        from onnxpress.irpasses.quant.collect import stream_statistics

        names = sorted({n.inputs[0].name for n in matmuls if n.inputs[0].name})
        stats = stream_statistics(model, samples, {name: MeanSquare() for name in names}, show_progress=ctx.show_progress,
                                  description="cluster statistics")
        return {name: s.value for name, s in stats.items() if s.total is not None}, {}

    def _cluster(self, weight: np.ndarray, importance: np.ndarray | None, gram: np.ndarray | None, bits: int) -> Clustered:
        levels = 1 << bits
        if self.scope == "tensor" or bits > 4:  # 256 entries per column would outweigh the codes: one book
            codes, book = kmeans_tensor(weight, levels, importance, self.iterations)
        else:
            codes, book = kmeans_columns(weight, levels, importance, self.iterations)
        full = np.zeros((book.shape[0], levels), np.float32)
        full[:, : book.shape[1]] = book
        full[:, book.shape[1] :] = book[:, -1:]  # unused entries repeat the last (sorted order kept)
        if self.book_dtype == "float16":
            full = full.astype(np.float16).astype(np.float32)  # the values the stored book will hold
        if gram is not None:
            from onnxpress.irpasses.quant.gptq import gptq_codebook, prepare

            zero_code = bool((weight == 0).any()) and bool((full[:, 0] == 0).all())
            columns = np.broadcast_to(full, (weight.shape[1], levels))
            codes = gptq_codebook(weight, prepare(gram), columns.astype(np.float64), zero_code)
        return Clustered(codes, full)

    def _use_lut(self, node: ir.Node, clustered: Clustered, ctx: PassContext) -> bool:
        if self.form == "portable" or (self.form == "auto" and ctx.target != "ort"):
            return False
        from onnxpress import kernels

        if not kernels.available().ok:
            if self.form == "lut":
                raise PassOptionError(f"cluster: form=lut needs the onnxpress kernels: {kernels.available().reason}")
            return False
        if self.form == "lut":
            return True
        from onnxpress.irpasses.lowering.legalize_kernels import KERNEL_FASTER, Candidate, time_candidate

        candidate = Candidate(node, "lut", clustered.dense(), None, None)
        dense_ms, kernel_ms = time_candidate(candidate, self._rows.get(node, 1), 1)
        return kernel_ms <= KERNEL_FASTER * dense_ms

    # ----- emitting -------------------------------------------------------------------------------------
    def _codes_constant(self, graph: ir.Graph, name: str, codes: np.ndarray, uint4: bool) -> ir.Value:
        import ml_dtypes

        return add_constant(graph, name, codes.astype(ml_dtypes.uint4 if uint4 else np.uint8))

    def _lookup(self, graph: ir.Graph, base: str, codes: ir.Value, clustered: Clustered, columns: int) -> list[ir.Node]:
        """codes (any integer type) -> float values: Cast to int64, + column offsets, Gather from the flat book."""
        levels = clustered.book.shape[1]
        cast = ir.node("Cast", [codes], attributes={"to": ir.DataType.INT64}, name=f"{base}_codes_int64")
        nodes = [cast]
        index = cast.outputs[0]
        if clustered.book.shape[0] > 1:
            offsets = add_constant(graph, f"{base}_offsets", (np.arange(columns, dtype=np.int64) * levels))
            add = ir.node("Add", [index, offsets], name=f"{base}_flat_codes")
            nodes.append(add)
            index = add.outputs[0]
        book = add_constant(graph, f"{base}_codebook", self._stored_book(clustered.book).reshape(-1))
        nodes.append(ir.node("Gather", [book, index], attributes={"axis": 0}, name=f"{base}_lookup"))
        return self._as_float(nodes, base)

    def _stored_book(self, book: np.ndarray) -> np.ndarray:
        return book.astype(np.float16 if self.book_dtype == "float16" else np.float32)

    def _as_float(self, nodes: list[ir.Node], base: str) -> list[ir.Node]:
        """``nodes`` plus, after a float16 lookup (the last node), a Cast of its output to float32."""
        if self.book_dtype == "float32":
            return nodes
        cast = ir.node("Cast", [nodes[-1].outputs[0]], attributes={"to": ir.DataType.FLOAT}, name=f"{base}_values")
        return [*nodes, cast]

    def _emit_matmul(self, model: ir.Model, node: ir.Node, clustered: Clustered, uint4: bool) -> int:
        graph = node.graph
        assert graph is not None
        base = node.inputs[1].name or node.name or "weight"
        codes = self._codes_constant(graph, f"{base}_codes", clustered.codes, uint4)
        nodes = self._lookup(graph, base, codes, clustered, clustered.codes.shape[1])
        graph.insert_before(node, nodes)
        node.replace_input_with(1, nodes[-1].outputs[0])
        return _stored_bytes(clustered, uint4, 2 if self.book_dtype == "float16" else 4)

    def _emit_table(self, model: ir.Model, node: ir.Node, clustered: Clustered, uint4: bool) -> int:
        """Gather(codes table, ids) and only the gathered rows looked up: the table stays compressed at run
        time. A uint4 table is widened to uint8 first (Gather takes no 4-bit data), a Cast of a constant that
        onnxruntime folds at load. Per-row books ([V, L]) are gathered by the same ids and read with
        GatherElements along the last axis; one book for the tensor is a plain Gather."""
        graph = node.graph
        assert graph is not None
        base = node.inputs[0].name or node.name or "table"
        ids = node.inputs[1]
        codes = self._codes_constant(graph, f"{base}_codes", clustered.codes, uint4)
        nodes: list[ir.Node] = []
        if uint4:
            widen = ir.node("Cast", [codes], attributes={"to": ir.DataType.UINT8}, name=f"{base}_codes_uint8")
            nodes.append(widen)
            codes = widen.outputs[0]
        rows = ir.node("Gather", [codes, ids], attributes={"axis": 0}, name=f"{base}_rows")
        index = ir.node("Cast", [rows.outputs[0]], attributes={"to": ir.DataType.INT64}, name=f"{base}_codes_int64")
        nodes += [rows, index]
        stored = self._stored_book(clustered.book)
        if clustered.book.shape[0] == 1:
            nodes.append(ir.node("Gather", [add_constant(graph, f"{base}_codebook", stored[0]), index.outputs[0]],
                                 attributes={"axis": 0}, name=f"{base}_lookup"))
        else:
            books = ir.node("Gather", [add_constant(graph, f"{base}_codebook", stored), ids], attributes={"axis": 0},
                            name=f"{base}_row_books")
            nodes += [books, ir.node("GatherElements", [books.outputs[0], index.outputs[0]], attributes={"axis": -1},
                                     name=f"{base}_lookup")]
        nodes = self._as_float(nodes, base)
        graph.insert_before(node, nodes)
        node.outputs[0].replace_all_uses_with(nodes[-1].outputs[0], replace_graph_outputs=True)
        name = node.outputs[0].name
        node.outputs[0].name = None
        nodes[-1].outputs[0].name = name
        graph.remove(node, safe=True)
        return _stored_bytes(clustered, uint4, 2 if self.book_dtype == "float16" else 4)

    def _emit_lut(self, node: ir.Node, clustered: Clustered, bits: int) -> int:
        from onnxpress.irpasses.lowering.legalize_kernels import (
            Candidate,
            replace_with_kernel,
        )

        replace_with_kernel(Candidate(node, "lut", clustered.dense(), None, None))
        K, N = clustered.codes.shape
        return K * N * (4 if bits > 2 else 2) // 8 + clustered.book.nbytes


def _float_matrix(value: ir.Value | None, min_elements: int) -> bool:
    if value is None or value.const_value is None or value.is_graph_input():
        return False
    tensor = value.const_value
    return len(tensor.shape) == 2 and tensor.size >= min_elements and tensor.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16)


def _stored_bytes(clustered: Clustered, uint4: bool, book_bytes: int = 2) -> int:
    return (clustered.codes.size + 1) // 2 * (1 if uint4 else 2) + clustered.book.size * book_bytes
