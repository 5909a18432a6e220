"""cluster: weight sharing without retraining. Every MatMul weight, Conv kernel and embedding table takes one of 2**bits
values per column (or per tensor), found by 1-D k-means (``kmeans.py``), optionally weighted by how much each
input channel matters on the calibration data (E[x_k^2], the diagonal of the layer's input Hessian, as
SqueezeLLM weighs its clusters).

Forms:
- portable (standard ONNX): the codes stored as uint4 (opset >= 21; uint8 below) and a float codebook;
  ``Cast -> Add(column offsets) -> Gather(codebook)`` rebuilds a MatMul weight, which onnxruntime folds into a
  constant when the session loads (dense speed, 8x smaller file at 4 bits). A table's rows are gathered as
  codes first and only the gathered rows looked up, so the table stays compressed at run time.
- ``grid=uniform``: evenly spaced levels (one step per tensor) instead of k-means, for ``entropy-code`` to
  shorten (k-means leaves nothing to gain there); with ``fidelity``, the step is bisected to the coarsest
  that holds it.
- ``--target ort``: MatMuls whose codebook GEMM (``onnxpress.LutMatMul``, exact for the clustered weight) times
  faster on this machine than dense run it, compressed in memory; the rest take the portable form.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.cleanup.dead_code import remove_unused
from onnxpress.irpasses.clustering.kmeans import kmeans_columns, kmeans_tensor, uniform_grid
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


PROBE_STEP = 0.25
"""The step (x RMS) at which ``allocate`` measures each layer alone: coarse enough to move the metric above
its noise, fine enough to stay in the regime where the loss grows with step^2."""
FINEST_STEP = 1 / 128
"""The finest step the fidelity search tries (x RMS); ``uniform_grid`` widens any step whose levels would not
reach 99.9 % of a tensor's weights, so the finest grid is each tensor's own floor."""


@dataclasses.dataclass
class Clustered:
    codes: np.ndarray  # [K, N] uint8
    book: np.ndarray  # [1 | N, 2**bits] float32
    exact_book: bool = False  # stored as float32 whatever book_dtype says (a fine uniform grid's 256 levels)
    scale: np.ndarray | None = None  # [N]: the book is in units of each column's scale (a uniform grid per channel)
    group: int = 1  # adjacent columns sharing one book (scope=group:G)

    def dense(self) -> np.ndarray:
        columns = np.arange(self.codes.shape[1]) // self.group
        values = self.book[0][self.codes] if self.book.shape[0] == 1 else self.book[columns, self.codes]
        return (values if self.scale is None else values * self.scale).astype(np.float32)


@dataclasses.dataclass
class Cluster(Pass):
    """Cluster MatMul weights, Conv kernels (per output channel) and embedding tables to 2**bits shared values."""

    name = "cluster"
    lossy = True
    needs = frozenset({CONSTANTS_LIFTED})
    bits: int = 4
    scope: str = "channel"
    """channel: one codebook per output column of a MatMul weight and per row of an embedding table (a
    token's vector); group:G: one per G adjacent output columns (Core ML's grouped palettization; a 4-bit
    book per column of 384 costs 17 % on top of its codes, per 8 columns 2 %; tables keep a book per row);
    tensor: one for the whole weight."""
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
    grid: Literal["kmeans", "uniform"] = "kmeans"
    """uniform: 2**bits evenly spaced levels per tensor (zero among them), step = ``step`` x the tensor's RMS
    (or the step that spans its range, whichever is wider): codes with rare tails, for ``entropy-code``."""
    step: float = 0.0
    """grid=uniform: the step as a fraction of each tensor's RMS; 0 = the range over 2**bits levels, or with
    ``fidelity`` the coarsest step that meets it (bisection over the whole model)."""
    allocate: bool = True
    """grid=uniform with fidelity: steps per layer from each layer's measured sensitivity (one trial per
    layer), so sensitive layers get finer grids and tolerant ones coarser, for fewer bits at the same target."""
    metric: Any = dataclasses.field(default=None, metadata={"python_only": True})
    """Python API: a callable (float outputs, clustered outputs) -> score compared with the fidelity value."""

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise PassOptionError(f"cluster: bits={self.bits} must be in 2..8", hint="e.g. cluster{bits=4}")
        if self.form == "lut" and self.bits > 4:
            raise PassOptionError(f"cluster: form=lut needs bits <= 4 (LutMatMul's codes), got {self.bits}")
        if self.iterations < 1:
            raise PassOptionError(f"cluster: iterations={self.iterations} must be at least 1")
        if self.scope not in ("channel", "tensor") and not _group_size(self.scope):
            raise PassOptionError(f"cluster: scope={self.scope!r} is not channel, tensor or group:G (G >= 2)",
                                  hint="e.g. cluster{bits=4,scope=group:8}")
        if self.step < 0 or (self.step and self.grid != "uniform"):
            raise PassOptionError(f"cluster: step={self.step} needs grid=uniform and a positive value",
                                  hint="e.g. cluster{grid=uniform,bits=8,step=0.1}")

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
        if self.grid == "uniform":
            self._multipliers: dict[str, float] = {}
            self._rounded = False
            self._reference: list | None = None  # float outputs on the judged samples, once per run
            step = self._step_search(model, ctx, matmuls, tables, judged) if searching and not self.step else self.step
            if searching and grams:
                grams = self._gptq_or_plain(model, ctx, matmuls, tables, grams, step, judged)
            return self._finish(model, ctx, matmuls, tables, grams, step)
        widths = sorted({self.bits, 8}) if searching else [self.bits]
        self._clusters: dict[tuple[int, int], Clustered] = {}
        with ctx.progress("clustering", len(matmuls) + len(tables)) as bar:
            for node in matmuls:
                tensor = node.inputs[1].const_value
                weight = _matrix(node)
                source = node.inputs[0].name or ""
                if source in grams and grams[source].shape[0] != weight.shape[0]:
                    source = ""  # statistics of another reader of this input (a k x k conv beside a 1x1)
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
                        rows = self._cluster(np.ascontiguousarray(table.T), None, None, bits, grouped=False)
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

    # ----- uniform grid -------------------------------------------------------------------------------
    def _uniform(self, weight: np.ndarray, gram: np.ndarray | None, step: float, per_column: bool) -> Clustered:
        """The tensor on a uniform grid, in units of each column's RMS when ``per_column`` (output channels of
        a BN-folded Conv differ in scale by orders of magnitude); with E[x xT], rows rounded to it by GPTQ
        (exact zeros kept)."""
        levels = 1 << self.bits
        scale = None
        if per_column:
            scale = np.sqrt(np.mean(np.square(weight, dtype=np.float64), axis=0)).astype(np.float32)
            scale[scale == 0] = 1.0
        codes, book = uniform_grid(weight if scale is None else weight / scale, levels, step)
        if gram is not None:
            from onnxpress.irpasses.quant.gptq import gptq_codebook, prepare

            columns = book.astype(np.float64) * (1.0 if scale is None else scale.astype(np.float64).reshape(-1, 1))
            columns = np.broadcast_to(columns, (weight.shape[1], levels))
            codes = gptq_codebook(weight, prepare(gram), columns, zero_index=int(np.flatnonzero(book[0] == 0)[0]))
        return Clustered(codes, book, exact_book=True, scale=scale)

    def _uniform_all(self, matmuls: list[ir.Node], tables: list[ir.Node], grams: dict[str, np.ndarray], step: float) -> None:
        self._clusters = {}
        for node, index in [(n, 1) for n in matmuls] + [(n, 0) for n in tables]:
            tensor = node.inputs[index].const_value
            weight = _matrix(node) if index == 1 else tensor.numpy().astype(np.float32)
            gram = grams.get(node.inputs[0].name or "") if index == 1 else None
            gram = gram if gram is not None and gram.shape[0] == weight.shape[0] else None
            per_column = index == 1 and self.scope != "tensor"  # tables: one scale (a row's scale would need a gather)
            layer_step = step * self._multipliers.get(node.name or "", 1.0)
            self._clusters[(id(tensor), self.bits)] = self._uniform(weight, gram, layer_step, per_column)
        self._pinned = [n.inputs[1].const_value for n in matmuls] + [n.inputs[0].const_value for n in tables]

    def _step_search(self, model: ir.Model, ctx: PassContext, matmuls: list[ir.Node], tables: list[ir.Node],
                     samples: list[dict]) -> float:
        """The coarsest step (fraction of each tensor's RMS) whose plainly rounded model meets the fidelity
        target, by bisection in log space; GPTQ rounding of the final model only adds fidelity. Fidelity falls
        with the step near monotonically, so ~8 trials settle it to ~10 %. With ``allocate``, each layer's step
        is the global one times a multiplier from its sensitivity (``_allocate``)."""
        from onnxpress.irpasses.core.snapshot import snapshot
        from onnxpress.irpasses.quant import sensitivity

        metric, threshold, text = sensitivity.resolve_metric(self.fidelity, self.metric)
        optimization = sensitivity.evaluation_level(ctx.target)
        reference = self._reference = sensitivity.run_samples(model, samples, optimization)
        uint4 = model.opset_imports.get("", 0) >= 21
        scores: dict[float, float] = {}

        def score(step: float) -> float:
            self._uniform_all(matmuls, tables, {}, step)
            clone = snapshot(model)
            self._emit(clone, ctx, None, uint4, final=False)
            scores[step] = metric(reference, sensitivity.run_samples(clone, samples, optimization))
            return scores[step]

        self._multipliers = self._allocate(model, ctx, matmuls + tables, metric, reference, samples) if self.allocate else {}
        coarse, fine = 2.0, FINEST_STEP
        if self._multipliers:  # the finest layers' steps reach FINEST_STEP at a global step this much lower
            fine = FINEST_STEP / max(1.0, 1 / min(self._multipliers.values()))
            if score(fine) < threshold:
                ctx.logger.info("cluster: per-layer steps miss %s at the finest grid; one step for every layer", text)
                self._multipliers, scores, fine = {}, {}, FINEST_STEP
        with ctx.progress("step search", 9) as bar:
            if score(coarse) >= threshold:
                chosen = coarse
            elif score(fine) < threshold:
                ctx.logger.warning("cluster: %s fails %s even at the finest %d-bit grid (%.5f): using that grid", text,
                                   "the target", self.bits, scores[fine])
                chosen = fine
            else:
                lo, hi = np.log(fine), np.log(coarse)
                for _ in range(7):
                    bar.advance()
                    middle = float(np.exp((lo + hi) / 2))
                    if score(middle) >= threshold:
                        lo = np.log(middle)
                    else:
                        hi = np.log(middle)
                chosen = max((st for st, sc in scores.items() if sc >= threshold), default=fine)
        ctx.logger.info("cluster: step %.4g x RMS meets %s (%.5f) after %d trials", chosen, text, scores[chosen], len(scores))
        self._search_stats = {"step": chosen, "search_score": scores[chosen], "trials": len(scores)}
        if self._multipliers:
            steps = [chosen * m for m in self._multipliers.values()]
            self._search_stats.update(step_min=min(steps), step_max=max(steps))
        return chosen

    def _gptq_or_plain(self, model: ir.Model, ctx: PassContext, matmuls: list[ir.Node], tables: list[ir.Node],
                       grams: dict[str, np.ndarray], step: float, samples: list[dict]) -> dict[str, np.ndarray]:
        """GPTQ's error feedback helps coarse grids and can hurt fine ones: with a few hundred calibration tokens
        E[x xT] is rank-deficient for 1536 inputs, and at MiniLM's chosen step 0.048 GPTQ rounding kept 0.887 of
        retrieval where plain rounding kept 0.975. Both roundings are judged on the held-out search samples;
        the statistics are kept ({} = plain rounding) only where GPTQ does at least as well."""
        from onnxpress.irpasses.core.snapshot import snapshot
        from onnxpress.irpasses.quant import sensitivity

        metric, _, _ = sensitivity.resolve_metric(self.fidelity, self.metric)
        optimization = sensitivity.evaluation_level(ctx.target)
        reference = self._reference or sensitivity.run_samples(model, samples, optimization)  # the step search ran it
        uint4 = model.opset_imports.get("", 0) >= 21
        scores, rounded = [], []
        for statistics in (grams, {}):
            self._uniform_all(matmuls, tables, statistics, step)
            rounded.append(self._clusters)
            clone = snapshot(model)
            self._emit(clone, ctx, None, uint4, final=False)
            scores.append(metric(reference, sensitivity.run_samples(clone, samples, optimization)))
        ctx.logger.info("cluster: GPTQ rounding scores %.5f, plain rounding %.5f", *scores)
        self._search_stats = {**getattr(self, "_search_stats", {}), "gptq_score": scores[0], "plain_score": scores[1]}
        self._clusters = rounded[0] if scores[0] >= scores[1] else rounded[1]
        self._rounded = True  # _finish emits these
        return grams if scores[0] >= scores[1] else {}

    def _allocate(self, model: ir.Model, ctx: PassContext, layers: list[ir.Node], metric: Any,
                  reference: list, samples: list[dict]) -> dict[str, float]:
        """Per-layer step multipliers: each layer alone at ``PROBE_STEP`` costs ``loss`` of the metric (for
        small errors, proportional to its weight count n times its sensitivity times step^2); the bits an
        entropy-coded grid spends fall by log2 of the step, so the steps that spend fewest bits for a given
        total loss go as sqrt(n / loss) (the classic high-rate bit allocation). Normalized to a weighted
        geometric mean of 1 and clipped to 1/8..8, so the global step keeps its meaning."""
        from onnxpress.irpasses.core.snapshot import snapshot
        from onnxpress.irpasses.quant import sensitivity

        if len(layers) < 2:
            return {}
        optimization = sensitivity.evaluation_level(ctx.target)
        uint4 = model.opset_imports.get("", 0) >= 21
        perfect = metric(reference, reference)
        self._multipliers = {}
        self._uniform_all([n for n in layers if n.op_type != "Gather"], [n for n in layers if n.op_type == "Gather"], {}, PROBE_STEP)
        names, sizes, losses = [], [], []
        with ctx.progress("layer sensitivity", len(layers)) as bar:
            for node in layers:
                clone = snapshot(model)
                self._emit(clone, ctx, {node.name or "": sensitivity.FULL}, uint4, final=False)
                losses.append(max(perfect - metric(reference, sensitivity.run_samples(clone, samples, optimization)), 1e-12))
                names.append(node.name or "")
                sizes.append(node.inputs[1 if node.op_type != "Gather" else 0].const_value.size)
                bar.advance()
        n, loss = np.asarray(sizes, np.float64), np.asarray(losses)
        raw = np.log(np.sqrt(n / loss))
        raw -= (n * raw).sum() / n.sum()
        return dict(zip(names, np.clip(np.exp(raw), 1 / 8, 8.0).tolist(), strict=True))

    def _finish(self, model: ir.Model, ctx: PassContext, matmuls: list[ir.Node], tables: list[ir.Node],
                grams: dict[str, np.ndarray], step: float) -> PassResult:
        if not getattr(self, "_rounded", False):
            with ctx.progress("rounding to the grid", 1):
                self._uniform_all(matmuls, tables, grams, step)
        entropy_bits = sum(_entropy_bits(c.codes) for c in self._clusters.values())
        uint4 = model.opset_imports.get("", 0) >= 21
        self._rows = {}
        before, after, lut, _ = self._emit(model, ctx, None, uint4, final=True)
        remove_unused(model)
        search = getattr(self, "_search_stats", {"step": step})
        return self.result(model, True, layers=len(matmuls), tables=len(tables), lut_matmuls=lut, bytes_before=before,
                           bytes_after=after, entropy_bytes=int(entropy_bits / 8), **search)

    # ----- choosing -------------------------------------------------------------------------------------
    def _layers(self, model: ir.Model) -> tuple[list[ir.Node], list[ir.Node]]:
        matmuls, tables = [], []
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.domain not in ("", "ai.onnx") or excluded_by(node, self.exclude) is not None:
                continue
            if node.op_type == "MatMul" and _float_matrix(node.inputs[1] if len(node.inputs) > 1 else None, self.min_elements):
                matmuls.append(node)
            elif node.op_type == "Conv" and _float_matrix(node.inputs[1], self.min_elements, rank=(3, 4, 5)):
                matmuls.append(node)  # a kernel [O, I/g, *window] clusters as the matrix [I/g * window, O]
            elif (self.embeddings and node.op_type == "Gather" and node.attributes.get_int("axis", 0) == 0
                  and _float_matrix(node.inputs[0], self.min_elements)):
                tables.append(node)
        return matmuls, tables

    def _statistics(self, model: ir.Model, ctx: PassContext, matmuls: list[ir.Node],
                    samples: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per MatMul input name: E[x^2] per channel (weighted) or E[x xT] (gptq, whose diagonal is E[x^2])."""
        method = self.method if self.method != "auto" else ("gptq" if ctx.samples is not None else "kmeans")
        convs = [n for n in matmuls if n.op_type == "Conv" and _pointwise(n)]  # a 1x1 conv is a MatMul over channels
        matmuls = [n for n in matmuls if n.op_type == "MatMul"]  # other Conv kernels cluster without statistics
        if method == "kmeans" or not (matmuls or convs):
            return {}, {}
        from onnxpress.irpasses.quant.data import calibration_samples

        if samples is None:
            samples = calibration_samples(ctx, model, False, self.name)
        if method == "gptq":
            from onnxpress.irpasses.quant.bodies import shared_names
            from onnxpress.irpasses.quant.collect import stream_statistics
            from onnxpress.irpasses.quant.gptq import GramMatrix

            ambiguous = shared_names(model)
            wanted = {n.inputs[0].name: GramMatrix() for n in matmuls}
            wanted.update({n.inputs[0].name: GramMatrix(axis=1) for n in convs})
            wanted = {name: gram for name, gram in wanted.items() if name and name not in ambiguous}
            stats = stream_statistics(model, samples, wanted, show_progress=ctx.show_progress, description="gptq statistics")
            grams = {name: g.hessian() for name, g in stats.items() if not g.empty}
            return {name: np.diag(h).copy() for name, h in grams.items()}, grams
        from onnxpress.irpasses.quant.collect import stream_statistics

        names = sorted({n.inputs[0].name for n in matmuls if n.inputs[0].name})
        stats = stream_statistics(model, samples, {name: MeanSquare() for name in names}, show_progress=ctx.show_progress,
                                  description="cluster statistics")
        return {name: s.value for name, s in stats.items() if s.total is not None}, {}

    def _cluster(self, weight: np.ndarray, importance: np.ndarray | None, gram: np.ndarray | None, bits: int,
                 grouped: bool = True) -> Clustered:
        """Codes and books for ``weight`` [K, N] at ``bits``; ``grouped`` False: a book per column even under
        scope=group:G (a table's rows are gathered one by one, each with its own book)."""
        levels = 1 << bits
        group = _group_size(self.scope) if grouped else 0
        if self.scope == "tensor" or bits > 4:  # 256 entries per column would outweigh the codes: one book
            codes, book = kmeans_tensor(weight, levels, importance, self.iterations)
        elif group:
            codes, book = _grouped_kmeans(weight, levels, importance, self.iterations, group)
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
            per_column = np.repeat(full, group, axis=0)[: weight.shape[1]] if group and full.shape[0] > 1 else full
            columns = np.broadcast_to(per_column, (weight.shape[1], levels))
            codes = gptq_codebook(weight, prepare(gram), columns.astype(np.float64), zero_code)
        return Clustered(codes, full, group=group if group and full.shape[0] > 1 else 1)

    def _use_lut(self, node: ir.Node, clustered: Clustered, ctx: PassContext) -> bool:
        if node.op_type != "MatMul" or self.form == "portable" or (self.form == "auto" and (ctx.target != "ort" or self.grid == "uniform")):
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

    def _lookup(self, graph: ir.Graph, base: str, codes: ir.Value, clustered: Clustered, columns: int,
                offsets_shape: tuple[int, ...] | None = None) -> list[ir.Node]:
        """codes (any integer type) -> float values: Cast to int64, + column offsets (along the last axis, or
        shaped ``offsets_shape`` for a Conv kernel's output channels), Gather from the flat book."""
        levels = clustered.book.shape[1]
        cast = ir.node("Cast", [codes], attributes={"to": ir.DataType.INT64}, name=f"{base}_codes_int64")
        nodes = [cast]
        index = cast.outputs[0]
        if clustered.book.shape[0] > 1:
            offsets = np.arange(columns, dtype=np.int64) // clustered.group * levels
            offsets = add_constant(graph, f"{base}_offsets", offsets.reshape(offsets_shape) if offsets_shape else offsets)
            add = ir.node("Add", [index, offsets], name=f"{base}_flat_codes")
            nodes.append(add)
            index = add.outputs[0]
        book = add_constant(graph, f"{base}_codebook", self._stored_book(clustered).reshape(-1))
        nodes.append(ir.node("Gather", [book, index], attributes={"axis": 0}, name=f"{base}_lookup"))
        return self._as_float(nodes, base, clustered)

    def _half_book(self, clustered: Clustered) -> bool:
        return self.book_dtype == "float16" and not clustered.exact_book

    def _stored_book(self, clustered: Clustered) -> np.ndarray:
        return clustered.book.astype(np.float16 if self._half_book(clustered) else np.float32)

    def _as_float(self, nodes: list[ir.Node], base: str, clustered: Clustered) -> list[ir.Node]:
        """``nodes`` plus, after a float16 lookup (the last node), a Cast of its output to float32."""
        if not self._half_book(clustered):
            return nodes
        cast = ir.node("Cast", [nodes[-1].outputs[0]], attributes={"to": ir.DataType.FLOAT}, name=f"{base}_values")
        return [*nodes, cast]

    def _emit_matmul(self, model: ir.Model, node: ir.Node, clustered: Clustered, uint4: bool) -> int:
        graph = node.graph
        assert graph is not None
        base = node.inputs[1].name or node.name or "weight"
        layout, offsets_shape = clustered.codes, None
        if node.op_type == "Conv":  # back from the matrix view [I/g * window, O] to the kernel's own layout
            shape = tuple(node.inputs[1].const_value.shape.numpy())
            layout = np.ascontiguousarray(clustered.codes.T).reshape(shape)
            offsets_shape = (shape[0],) + (1,) * (len(shape) - 1)
        codes = self._codes_constant(graph, f"{base}_codes", layout, uint4)
        nodes = self._lookup(graph, base, codes, clustered, clustered.codes.shape[1], offsets_shape)
        if clustered.scale is not None:  # book in units of each column's scale
            scale = add_constant(graph, f"{base}_scale", clustered.scale.reshape(offsets_shape or (-1,)))
            nodes.append(ir.node("Mul", [nodes[-1].outputs[0], scale], name=f"{base}_scaled"))
        graph.insert_before(node, nodes)
        node.replace_input_with(1, nodes[-1].outputs[0])
        return _stored_bytes(clustered, uint4, 2 if self._half_book(clustered) else 4)

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
        stored = self._stored_book(clustered)
        if clustered.book.shape[0] == 1:
            nodes.append(ir.node("Gather", [add_constant(graph, f"{base}_codebook", stored[0]), index.outputs[0]],
                                 attributes={"axis": 0}, name=f"{base}_lookup"))
        else:
            books = ir.node("Gather", [add_constant(graph, f"{base}_codebook", stored), ids], attributes={"axis": 0},
                            name=f"{base}_row_books")
            nodes += [books, ir.node("GatherElements", [books.outputs[0], index.outputs[0]], attributes={"axis": -1},
                                     name=f"{base}_lookup")]
        nodes = self._as_float(nodes, base, clustered)
        graph.insert_before(node, nodes)
        node.outputs[0].replace_all_uses_with(nodes[-1].outputs[0], replace_graph_outputs=True)
        name = node.outputs[0].name
        nodes[-1].outputs[0].type, nodes[-1].outputs[0].shape = node.outputs[0].type, node.outputs[0].shape
        node.outputs[0].name = None
        nodes[-1].outputs[0].name = name
        graph.remove(node, safe=True)
        return _stored_bytes(clustered, uint4, 2 if self._half_book(clustered) else 4)

    def _emit_lut(self, node: ir.Node, clustered: Clustered, bits: int) -> int:
        from onnxpress.irpasses.lowering.legalize_kernels import (
            Candidate,
            replace_with_kernel,
        )

        replace_with_kernel(Candidate(node, "lut", clustered.dense(), None, None))
        K, N = clustered.codes.shape
        return K * N * (4 if bits > 2 else 2) // 8 + clustered.book.nbytes


def _matrix(node: ir.Node) -> np.ndarray:
    """The weight of a MatMul [K, N], or a Conv kernel [O, I/g, *window] as [I/g * window, O]."""
    weight = node.inputs[1].const_value.numpy().astype(np.float32)
    return np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T) if node.op_type == "Conv" else weight


def _group_size(scope: str) -> int:
    """G of 'group:G' (G >= 2), else 0."""
    kind, _, size = scope.partition(":")
    return int(size) if kind == "group" and size.isdigit() and int(size) >= 2 else 0


def _grouped_kmeans(weight: np.ndarray, levels: int, importance: np.ndarray | None, iterations: int,
                    group: int) -> tuple[np.ndarray, np.ndarray]:
    """One book per ``group`` adjacent columns: each group's columns stacked into one column of a [K*G, N/G]
    matrix (the last group padded with copies of its last column), clustered per column, codes unstacked."""
    K, N = weight.shape
    groups = -(-N // group)
    padded = np.concatenate([weight, np.repeat(weight[:, -1:], groups * group - N, axis=1)], axis=1)
    stacked = padded.reshape(K, groups, group).transpose(0, 2, 1).reshape(K * group, groups)
    mass = None if importance is None else np.repeat(np.asarray(importance).reshape(K), group)
    codes, book = kmeans_columns(np.ascontiguousarray(stacked), levels, mass, iterations)
    codes = codes.reshape(K, group, groups).transpose(0, 2, 1).reshape(K, groups * group)[:, :N]
    return np.ascontiguousarray(codes), book


def _pointwise(node: ir.Node) -> bool:
    """A 1x1 Conv of one group without padding: its kernel is a MatMul over input channels (GPTQ's view)."""
    shape = node.inputs[1].const_value.shape.numpy()
    pads = node.attributes.get("pads")
    return (len(shape) == 4 and tuple(shape[2:]) == (1, 1) and node.attributes.get_int("group", 1) == 1
            and (pads is None or not any(pads.as_ints())))


def _float_matrix(value: ir.Value | None, min_elements: int, rank: tuple[int, ...] = (2,)) -> bool:
    if value is None or value.const_value is None or value.is_graph_input():
        return False
    tensor = value.const_value
    return len(tensor.shape) in rank and tensor.size >= min_elements and tensor.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16)


def _stored_bytes(clustered: Clustered, uint4: bool, book_bytes: int = 2) -> int:
    scales = 0 if clustered.scale is None else clustered.scale.nbytes
    return (clustered.codes.size + 1) // 2 * (1 if uint4 else 2) + clustered.book.size * book_bytes + scales


def _entropy_bits(codes: np.ndarray) -> float:
    """Zeroth-order entropy of a code tensor times its size: what an ideal coder would spend on it."""
    counts = np.bincount(codes.reshape(-1), minlength=1).astype(np.float64)
    p = counts[counts > 0] / codes.size
    return float(-(p * np.log2(p)).sum() * codes.size)
