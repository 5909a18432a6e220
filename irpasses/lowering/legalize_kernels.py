"""legalize-kernels: MatMul/Gemm with N:M-sparse or few-valued constant weights -> our onnxruntime kernels.

onnxruntime's CPU build has no N:M kernel and no codebook GEMM: a 2:4-pruned or clustered weight runs as a
dense one. Where a weight has that structure, this pass rewrites the layer into ``onnxpress.SparseMatMul``
(2:4 or 4:8 along K; fp32 values, or int8 values with per-column scales when the weight is a
DequantizeLinear of int8 or the Cast * scale form ``qdq`` writes for portable CPUs) or
``onnxpress.LutMatMul`` (at most 16 distinct values per column or in the whole tensor: 2/3/4-bit codes into
exact codebooks). Both forms compute the same products as the dense layer
(the numeric check holds them to float tolerance).

Only where it pays: with ``cost_model=measured`` (default) each candidate layer is timed alone on this
machine, dense against the kernel, at the row count the first sample gives (1 without samples), and kept
only when the kernel takes at most ``faster`` of the dense time (int8 values: ``faster_int8``). Timings are cached per shape in-process.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Literal

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import BackendUnavailableError
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED

DOMAIN = "onnxpress"
KERNEL_FASTER = 0.95
"""Default share of the dense time a kernel may take to be chosen. Every kernel form stores less than the
dense weight (2:4 fp32 values + 2-bit positions: 53 %, int8: 16 % of fp32, LUT 4-bit: 12.5 %), so one that
is not slower is worth taking; the 5 % margin covers the scatter of the interleaved per-layer timings
(MiniLM's 384x384 2:4 int8 layer at 40 rows: 0.89x, which the earlier 0.9 rejected at the margin)."""
INT8_FASTER = 1.0
"""Share of the dense time an int8 SparseMatMul may take: not slower is enough. Its dense alternative, int8
codes onnxruntime expands to float32 at load, holds 4 bytes a weight at run time against the kernel's 0.625
(MiniLM's 384x384 2:4 int8 layers at 23 rows timed 0.96x, which the 0.95 rule turned away)."""
_TIMINGS: dict[tuple, tuple[float, float]] = {}


@dataclasses.dataclass
class Candidate:
    """A layer Y = A @ W (+ bias) whose weight has a structure one of our kernels runs."""

    node: ir.Node
    kind: Literal["sparse", "lut"]
    weight: np.ndarray  # [K, N] float32 (int8 codes for int8 sparse values)
    scales: np.ndarray | None  # int8 weights: per-column scales
    bias: np.ndarray | None
    m: int = 4
    n: int = 2
    add: ir.Node | None = None
    """A MatMul's only consumer, Add of a per-column constant, folded into the kernel as its bias."""


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _dequantized_int8(value: ir.Value) -> tuple[np.ndarray, np.ndarray] | None:
    """(int8 W [K, N], scales [N]) when ``value`` is DequantizeLinear(int8 constant, per-column scale, 0)."""
    producer = value.producer()
    if producer is None or producer.op_type != "DequantizeLinear" or producer.domain not in ("", "ai.onnx"):
        return None
    q, scale = _constant(producer.inputs[0]), _constant(producer.inputs[1])
    zero = _constant(producer.inputs[2]) if len(producer.inputs) > 2 and producer.inputs[2] is not None else None
    if q is None or scale is None or q.dtype != np.int8 or q.ndim != 2 or (zero is not None and np.any(zero != 0)):
        return None
    axis = producer.attributes.get_int("axis", 1)
    if scale.size == 1:
        scale = np.full(q.shape[1], float(scale.reshape(-1)[0]), np.float32)
    elif scale.ndim != 1 or axis not in (1, -1) or scale.shape[0] != q.shape[1]:
        return None
    return q, scale.astype(np.float32)


def _folded_int8(value: ir.Value) -> tuple[np.ndarray, np.ndarray] | None:
    """(int8 W [K, N], scales [N]) when ``value`` is Mul(Cast(int8 constant), per-column scale): the weight-only
    form ``qdq`` writes for CPUs without VNNI, which onnxruntime folds back into a dense float weight at load."""
    producer = value.producer()
    if producer is None or producer.op_type != "Mul" or producer.domain not in ("", "ai.onnx") or len(producer.inputs) != 2:
        return None
    for cast_in, scale_in in (producer.inputs, producer.inputs[::-1]):
        cast, scale = cast_in.producer() if cast_in is not None else None, _constant(scale_in)
        if cast is None or scale is None or cast.op_type != "Cast" or cast.domain not in ("", "ai.onnx"):
            continue
        q = _constant(cast.inputs[0])
        if q is None or q.dtype != np.int8 or q.ndim != 2 or cast.attributes.get_int("to", 0) != ir.DataType.FLOAT:
            continue
        if scale.dtype != np.float32 or (scale.size != 1 and (scale.size != q.shape[1] or scale.shape[-1] != q.shape[1])):
            continue
        return q, np.broadcast_to(scale.reshape(-1), (q.shape[1],)).astype(np.float32)
    return None


def _gemm_weight(node: ir.Node) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Gemm as A @ W + bias (transA=0, alpha and beta folded in), or None when it does not fit."""
    attrs = node.attributes
    if attrs.get_int("transA", 0) != 0:
        return None
    b = _constant(node.inputs[1])
    if b is None or b.ndim != 2 or b.dtype != np.float32:
        return None
    weight = (b.T if attrs.get_int("transB", 0) else b) * np.float32(attrs.get_float("alpha", 1.0))
    bias = None
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        c = _constant(node.inputs[2])
        if c is None or c.size not in (1, weight.shape[1]) or (c.ndim == 2 and c.shape[0] != 1):
            return None
        bias = np.broadcast_to(c.reshape(-1), (weight.shape[1],)).astype(np.float32) * np.float32(attrs.get_float("beta", 1.0))
    return np.ascontiguousarray(weight, dtype=np.float32), bias


def _bias_add(node: ir.Node, columns: int) -> tuple[ir.Node | None, np.ndarray | None]:
    """The Add that is the MatMul's only consumer and adds a constant that varies along the last axis only."""
    out = node.outputs[0]
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return None, None
    add = uses[0].node
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or add.graph is not node.graph:
        return None, None
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    bias = _constant(other)
    if bias is None or bias.dtype != np.float32 or bias.size != columns or (bias.ndim and bias.shape[-1] != columns):
        return None, None
    return add, bias.reshape(-1).copy()


def nm_pattern(weight: np.ndarray) -> tuple[int, int] | None:
    """(m, n) = (4, 2) or (8, 4) when every group of m rows along K keeps at most n non-zeros per column."""
    K = weight.shape[0]
    for m, n in ((4, 2), (8, 4)):
        if K % m == 0 and int((weight.reshape(K // m, m, -1) != 0).sum(axis=1).max(initial=0)) <= n:
            return m, n
    return None


def few_values(weight: np.ndarray, limit: int = 16) -> bool:
    """At most ``limit`` distinct values in every column (checked cheaply on the first column first)."""
    if np.unique(weight[:, 0]).size > limit:
        return False
    ordered = np.sort(weight, axis=0)
    return int((np.diff(ordered, axis=0) != 0).sum(axis=0).max(initial=0)) + 1 <= limit


def codebook_form(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(codes [K, N], codebook [1 | N, 2^bits], bits) reproducing ``weight`` exactly."""
    everything = np.unique(weight)
    if everything.size <= 16:
        bits = max(2, int(np.ceil(np.log2(max(everything.size, 2)))))
        book = np.zeros((1, 1 << bits), np.float32)
        book[0, : everything.size] = everything
        return np.searchsorted(everything, weight).astype(np.uint8), book, bits
    K, N = weight.shape
    ordered = np.sort(weight, axis=0)
    counts = (np.diff(ordered, axis=0) != 0).sum(axis=0) + 1
    bits = max(2, int(np.ceil(np.log2(int(counts.max())))))
    book = np.zeros((N, 1 << bits), np.float32)
    codes = np.empty((K, N), np.uint8)
    for col in range(N):
        values = np.unique(weight[:, col])
        book[col, : values.size] = values
        codes[:, col] = np.searchsorted(values, weight[:, col])
    return codes, book, bits


def find_candidate(node: ir.Node, lut: bool, sparse: bool, min_elements: int) -> tuple[Candidate | None, str]:
    """The layer's kernel form, or None and why not."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm"):
        return None, "not a MatMul/Gemm"
    if len(node.inputs) < 2 or node.inputs[0] is None or node.inputs[1] is None:
        return None, "missing inputs"
    a_type = node.inputs[0].type
    if a_type is not None and a_type.dtype != ir.DataType.FLOAT:
        return None, "activations are not float32"
    bias = None
    scales = None
    if node.op_type == "Gemm":
        found = _gemm_weight(node)
        if found is None:
            return None, "Gemm with transA, a non-constant weight or a bias that is not per column"
        weight, bias = found
    else:
        weight = _constant(node.inputs[1])
        if weight is None:
            dq = _dequantized_int8(node.inputs[1]) or _folded_int8(node.inputs[1])
            if dq is None:
                return None, "the weight is not a constant (or a DequantizeLinear / Cast * scale of an int8 constant)"
            weight, scales = dq
        if weight.ndim != 2 or weight.dtype not in (np.float32, np.int8):
            return None, "the weight is not a 2-D float32 matrix"
    if weight.size < min_elements:
        return None, f"the weight has fewer than {min_elements} elements"
    add = None
    if node.op_type == "MatMul":
        add, bias = _bias_add(node, weight.shape[1])
    if sparse:
        pattern = nm_pattern(weight)
        if pattern is not None and (weight == 0).mean() >= 0.45:
            return Candidate(node, "sparse", weight, scales, bias, *pattern, add=add), ""
    if lut and scales is None and few_values(weight):
        return Candidate(node, "lut", weight, None, bias, add=add), ""
    return None, "no N:M sparsity and more than 16 distinct values in some column"


def _tensor(graph_values: list[ir.Value], name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array), name=name))
    graph_values.append(value)
    return value


def kernel_node(c: Candidate, a: ir.Value, prefix: str) -> tuple[ir.Node, list[ir.Value]]:
    """The replacement node (reading ``a``) and the initializers it needs."""
    from onnxpress.kernels import formats

    inits: list[ir.Value] = []
    K, N = c.weight.shape
    if c.kind == "sparse":
        if c.scales is not None:  # int8 codes: pack them as float (exact for |q| <= 127), then back to int8
            packed = formats.pack_sparse(c.weight.astype(np.float32), c.m, c.n, "float32")
            packed.values = packed.values.astype(np.int8)
            packed.scales = c.scales.astype(np.float32)
        else:
            packed = formats.pack_sparse(c.weight, c.m, c.n, "float32")
        inputs = [a, _tensor(inits, f"{prefix}_values", packed.values), _tensor(inits, f"{prefix}_indices", packed.indices)]
        scales = packed.scales if packed.scales is not None else np.zeros(0, np.float32)
        inputs.append(_tensor(inits, f"{prefix}_scales", scales))
        if c.bias is not None:
            inputs.append(_tensor(inits, f"{prefix}_bias", c.bias))
        node = ir.Node(DOMAIN, "SparseMatMul", inputs, attributes=[ir.AttrInt64("N", N), ir.AttrInt64("m", c.m), ir.AttrInt64("n", c.n)],
                       num_outputs=1, name=f"{prefix}_SparseMatMul")
        return node, inits
    codes, book, bits = codebook_form(c.weight)
    inputs = [a, _tensor(inits, f"{prefix}_codes", formats.pack_codes(codes, bits)), _tensor(inits, f"{prefix}_codebook", book)]
    if c.bias is not None:
        inputs.append(_tensor(inits, f"{prefix}_bias", c.bias))
    node = ir.Node(DOMAIN, "LutMatMul", inputs,
                   attributes=[ir.AttrInt64("K", K), ir.AttrInt64("N", N), ir.AttrInt64("bits", bits)], num_outputs=1,
                   name=f"{prefix}_LutMatMul")
    return node, inits


def _layer_model(c: Candidate, rows: int, kernel: bool) -> ir.Model:
    """The layer alone (input x [rows, K], output y), dense or as the kernel."""
    K, N = c.weight.shape
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([rows, K]))
    inits: list[ir.Value] = []
    if kernel:
        node, inits = kernel_node(c, x, "layer")
    else:
        dense = c.weight.astype(np.float32) * (c.scales if c.scales is not None else np.float32(1))
        inputs = [x, _tensor(inits, "w", dense)]
        if c.bias is not None:
            inputs.append(_tensor(inits, "b", c.bias))
        node = ir.Node("", "Gemm" if c.bias is not None else "MatMul", inputs, num_outputs=1, name="layer")
    out = node.outputs[0]
    out.name, out.type = "y", ir.TensorType(ir.DataType.FLOAT)
    opsets = {"": 17, DOMAIN: 1} if kernel else {"": 17}
    graph = ir.Graph([x], [out], nodes=[node], initializers=inits, opset_imports=opsets, name="layer")
    return ir.Model(graph, ir_version=8)


def time_candidate(c: Candidate, rows: int, threads: int, rounds: int = 7, round_s: float = 0.01) -> tuple[float, float]:
    """(dense ms, kernel ms) of the layer alone on this machine, timed in alternating rounds so drift on a
    shared machine hits both alike; cached per shape and structure."""
    from onnxpress.backends.ort.runner import make_session

    K, N = c.weight.shape
    key = (c.kind, K, N, rows, threads, c.m, c.n, c.scales is not None, c.bias is not None,
           None if c.kind == "sparse" else codebook_form(c.weight[:, :64])[2])
    if key in _TIMINGS:
        return _TIMINGS[key]
    feed = {"x": np.random.default_rng(0).standard_normal((rows, K)).astype(np.float32)}
    sessions = [make_session(_layer_model(c, rows, kernel), optimization="all", threads=threads) for kernel in (False, True)]
    times: list[list[float]] = [[], []]
    for session in sessions:
        session.run(None, feed)
    for _ in range(rounds):
        for session, bucket in zip(sessions, times, strict=True):
            start = time.perf_counter()
            while len(bucket) % 3 or time.perf_counter() - start < round_s:
                t0 = time.perf_counter()
                session.run(None, feed)
                bucket.append(time.perf_counter() - t0)
    _TIMINGS[key] = (statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3)
    return _TIMINGS[key]


@dataclasses.dataclass
class LegalizeKernels(Pass):
    """Rewrite N:M-sparse and few-valued MatMul/Gemm weights into onnxpress kernels where measured faster."""

    name = "legalize-kernels"
    needs = frozenset({CONSTANTS_LIFTED})
    sparse: bool = True
    """SparseMatMul for 2:4 / 4:8 weights (at least 45 % zeros)."""
    lut: bool = True
    """LutMatMul for weights with at most 16 distinct values per column."""
    cost_model: Literal["measured", "always"] = "measured"
    """measured: keep a rewrite only where the kernel is faster on this machine; always: every candidate."""
    faster: float = KERNEL_FASTER
    """The kernel must take at most this share of the dense time (see KERNEL_FASTER)."""
    faster_int8: float = INT8_FASTER
    """The same for SparseMatMul with int8 values (see INT8_FASTER)."""
    threads: int = 1
    """Intra-op threads for the timings (the deployment's)."""
    min_elements: int = 16384
    """Smaller weights stay dense: the call overhead outweighs anything a kernel saves."""
    require: bool = True
    """False: without the kernel library (no compiler here) warn and leave the model dense instead of failing
    (the ORT backend's legalization does this)."""

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        for option in ("faster", "faster_int8"):
            if not 0 < getattr(self, option) <= 1:
                from onnxpress.irpasses.core.errors import PassOptionError

                raise PassOptionError(f"legalize-kernels: {option}={getattr(self, option)} must be in (0, 1]", hint=f"e.g. {option}=0.9")
        candidates = []
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            found, _ = find_candidate(node, self.lut, self.sparse, self.min_elements)
            if found is not None:
                candidates.append(found)
        if not candidates:
            return self.result(model, False, candidates=0)
        from onnxpress import kernels

        status = kernels.available()
        if not status.ok and not self.require:
            ctx.logger.warning("legalize-kernels: %d layer(s) could use onnxpress kernels, but they are not available "
                               "(%s); the model stays dense", len(candidates), status.reason)
            return self.result(model, False, candidates=len(candidates), kernels_unavailable=1)
        if not status.ok:
            raise BackendUnavailableError(f"legalize-kernels: the onnxpress kernels are not available: {status.reason}",
                                          hint="install g++, then: python -m onnxpress.kernels build")
        rows = layer_rows(model, ctx, [c.node for c in candidates])
        rewritten = {"sparse": 0, "lut": 0}
        slower = 0
        report = ctx.extra.setdefault("kernels", [])
        for c in candidates:
            dense_ms = kernel_ms = None
            if self.cost_model == "measured":
                dense_ms, kernel_ms = time_candidate(c, rows[c.node], self.threads)
                if kernel_ms > (self.faster_int8 if c.scales is not None else self.faster) * dense_ms:
                    slower += 1
                    report.append({"node": c.node.name, "kind": c.kind, "rows": rows[c.node], "dense_ms": dense_ms,
                                   "kernel_ms": kernel_ms, "rewritten": False})
                    continue
            replace_with_kernel(c)
            rewritten[c.kind] += 1
            report.append({"node": c.node.name, "kind": c.kind, "rows": rows[c.node], "dense_ms": dense_ms,
                           "kernel_ms": kernel_ms, "rewritten": True})
        if any(rewritten.values()):
            model.opset_imports.setdefault(DOMAIN, 1)
        return self.result(model, any(rewritten.values()), sparse=rewritten["sparse"], lut=rewritten["lut"],
                           kept_dense_slower=slower, candidates=len(candidates))


def layer_rows(model: ir.Model, ctx: PassContext, nodes: list[ir.Node]) -> dict[ir.Node, int]:
    """Rows of each layer's A (all axes but the last): from the first sample's shapes when there are samples,
    else from static dims (1 for a symbolic one)."""
    shapes: dict[str, tuple[int, ...]] = {}
    if ctx.samples is not None:
        from onnxpress.irpasses.quant.qdq import first_sample_shapes

        names = [n.inputs[0].name for n in nodes if n.inputs[0].name]
        shapes = first_sample_shapes(model, ctx, ctx.samples, names)
    rows = {}
    for node in nodes:
        a = node.inputs[0]
        shape = shapes.get(a.name or "")
        if shape is None:
            dims = list(a.shape) if a.shape is not None else []
            shape = tuple(d if isinstance(d, int) else 1 for d in dims)
        rows[node] = max(1, int(np.prod(shape[:-1]))) if len(shape) > 1 else 1
    return rows


def replace_with_kernel(c: Candidate) -> None:
    """Put the kernel form of ``c`` in place of its layer (and folded Add), dropping the weights left unused."""
    graph = c.node.graph
    assert graph is not None
    prefix = (c.node.name or f"{c.node.op_type}_{len(graph)}").replace("/", "_")
    node, inits = kernel_node(c, c.node.inputs[0], prefix)
    for value in inits:
        graph.register_initializer(value)
    graph.insert_before(c.node, node)
    last = c.add if c.add is not None else c.node  # the folded Add's output is the layer's output now
    old, new = last.outputs[0], node.outputs[0]
    name = old.name
    old.name = None
    new.name, new.type, new.shape = name, old.type, old.shape
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    weights = [v for v in c.node.inputs[1:] if v is not None]
    if c.add is not None:
        weights += [v for v in c.add.inputs if v is not None and v is not c.node.outputs[0]]
        graph.remove(c.add, safe=True)
    graph.remove(c.node, safe=True)
    for value in weights:
        _drop_if_unused(graph, value)


def _drop_if_unused(graph: ir.Graph, value: ir.Value) -> None:
    """Remove a weight nothing reads any more (and a DequantizeLinear that only produced it), so the dense
    copy does not stay in the file."""
    if value.uses() or value.is_graph_output():
        return
    producer = value.producer()
    if producer is not None and producer.graph is graph and all(not o.uses() and not o.is_graph_output() for o in producer.outputs):
        inputs = [v for v in producer.inputs if v is not None]
        graph.remove(producer, safe=True)
        for v in inputs:
            _drop_if_unused(graph, v)
    elif value.name in graph.initializers and graph.initializers[value.name] is value:
        graph.initializers.pop(value.name)
