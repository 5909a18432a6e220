"""Run an onnx-ir model with ONNX Runtime: for numeric checks, `compare`, and the conformance harness.

The model is stamped with an IR version the installed runtime reads (onnx 1.23 writes 14, onnxruntime 1.31
reads <= 13). Small models go to ORT as bytes; models with external or large weights through a temporary
folder, so nothing with weights passes through protobuf's 2 GiB limit.
"""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnxpress.irpasses.core.errors import BackendUnavailableError
from onnxpress.irpasses.core.snapshot import with_placeholders

_BYTES_LIMIT = 1_500_000_000


def max_ir_version() -> int:
    """Highest ONNX IR version the installed onnxruntime loads."""
    version = tuple(int(x) for x in ort.__version__.split(".")[:2])
    if version >= (1, 23):
        return 13  # checked: 1.31 refuses IR 14
    if version >= (1, 20):
        return 10
    return 9


def _weight_bytes(model: ir.Model) -> tuple[int, bool]:
    total, external = 0, False
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is None:
            continue
        total += tensor.nbytes
        external |= isinstance(tensor, ir.ExternalTensor)
    return total, external


@contextlib.contextmanager
def model_source(model: ir.Model | onnx.ModelProto | bytes | str | os.PathLike[str]) -> Iterator[bytes | str]:
    """Yield something ``InferenceSession`` accepts, with the IR version capped for this runtime."""
    cap = max_ir_version()
    if isinstance(model, (str, os.PathLike)):
        model = ir.load(os.fspath(model))
    if isinstance(model, bytes):
        model = onnx.load_model_from_string(model)
    if isinstance(model, onnx.ModelProto):
        if model.ir_version > cap:
            model = onnx.ModelProto.FromString(model.SerializeToString())
            model.ir_version = cap
        yield model.SerializeToString()
        return
    nbytes, external = _weight_bytes(model)
    original_ir = model.ir_version
    model.ir_version = min(original_ir, cap)
    try:
        if not external and nbytes < _BYTES_LIMIT:
            yield ir.to_proto(model).SerializeToString()
            return
        with tempfile.TemporaryDirectory(prefix="onnxpress-ort-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            ir.save(model, path, external_data="model.onnx.data")
            yield path
    finally:
        model.ir_version = original_ir


_BY_REFERENCE_BYTES = 1 << 16
_NUMPY_DTYPES = frozenset({
    ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT16,
    ir.DataType.UINT16, ir.DataType.INT32, ir.DataType.UINT32, ir.DataType.INT64, ir.DataType.UINT64, ir.DataType.BOOL,
})


def _rewritten_by_ort(value: ir.Value) -> bool:
    """Whether onnxruntime's own graph rewrites read this weight's bytes from the graph: DequantizeLinear ->
    MatMul becomes MatMulNBits at ORT_ENABLE_EXTENDED, whose transformer transposes the int8 weight and fails
    ("Missing required weight") on one handed over with add_external_initializers (issue 13, on AVX2 CPUs)."""
    return any(use.node.op_type == "DequantizeLinear" for use in value.uses())


_ARRAYS: collections.OrderedDict[int, tuple[object, np.ndarray]] = collections.OrderedDict()
_ARRAY_CACHE_BYTES = 256 << 20


def _array(tensor: ir.TensorProtocol) -> np.ndarray:
    """The tensor's contiguous array, kept for the next session over the same tensor (least recently used first
    out past 256 MiB): a fidelity search opens a session per trial on clones that share their weights, and
    decoding a protobuf-held weight each time was 4 of MiniLM auto's 41 s. The entry holds the tensor, so its id
    is not reused while cached. Memory-mapped (external) weights are not kept: they cost nothing to view, and a
    kept view would stop their file from being closed."""
    if isinstance(tensor, ir.ExternalTensor):
        return np.ascontiguousarray(tensor.numpy())
    key = id(tensor)
    if key in _ARRAYS:
        _ARRAYS.move_to_end(key)
        return _ARRAYS[key][1]
    array = np.ascontiguousarray(tensor.numpy())
    _ARRAYS[key] = (tensor, array)
    while sum(a.nbytes for _, a in _ARRAYS.values()) > _ARRAY_CACHE_BYTES and len(_ARRAYS) > 1:
        _ARRAYS.popitem(last=False)
    return array


def _weights_by_reference(model: ir.Model, options: ort.SessionOptions) -> tuple[bytes, list[ort.OrtValue]] | None:
    """The model as bytes without its large weights, which go to onnxruntime as arrays instead
    (``add_external_initializers``): serializing them into protobuf and parsing them back costs three
    transient copies (MiniLM: 90 MB each, per session), and a model over 2 GiB cannot be serialized at all.
    Weights that onnxruntime's rewrites read (quantized weights behind a DequantizeLinear) stay in the bytes.
    None when no weight is worth it."""
    chosen = []
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None or not (value.uses() or value.is_graph_output()):
            continue  # onnxruntime drops unused initializers before it would take their arrays
        if _rewritten_by_ort(value) and not isinstance(tensor, ir.ExternalTensor):
            continue
        external = isinstance(tensor, ir.ExternalTensor)
        if external and tensor.dtype not in _NUMPY_DTYPES:
            return None  # a file-backed weight that cannot go as an array: the whole model goes through a folder
        if external or (tensor.nbytes >= _BY_REFERENCE_BYTES and tensor.dtype in _NUMPY_DTYPES):
            chosen.append(name)
    if not chosen:
        return None
    arrays = [ort.OrtValue.ortvalue_from_numpy(_array(model.graph.initializers[n].const_value)) for n in chosen]
    clone = with_placeholders(model, chosen)
    for name, value in list(clone.graph.initializers.items()):
        if not (value.uses() or value.is_graph_output() or value.is_graph_input()):
            clone.graph.initializers.pop(name)  # onnxruntime would drop it anyway; it need not be serialized
    clone.ir_version = min(clone.ir_version, max_ir_version())
    options.add_external_initializers(chosen, arrays)
    return ir.to_proto(clone).SerializeToString(), arrays


def uses_kernels(model: object) -> bool:
    """Whether the model imports the ``onnxpress`` op domain (our kernel library must then be registered)."""
    from onnxpress.kernels import DOMAIN

    if isinstance(model, ir.Model):
        return DOMAIN in model.opset_imports or any(
            node.domain == DOMAIN for node in ir.traversal.RecursiveGraphIterator(model.graph))
    if isinstance(model, onnx.ModelProto):
        return any(o.domain == DOMAIN for o in model.opset_import)
    if isinstance(model, bytes):
        return DOMAIN.encode() in model  # at worst registers the library for nothing
    return False


def log_level() -> int:
    """onnxruntime's C++ logger writes its errors straight to file descriptor 2, then raises the same message as
    a Python exception, which onnxpress turns into its one-line error: only fatal ones are logged (4), unless
    ONNXPRESS_ORT_LOG_LEVEL (0 verbose .. 4 fatal) asks for more while debugging."""
    try:
        return min(max(int(os.environ.get("ONNXPRESS_ORT_LOG_LEVEL", "4")), 0), 4)
    except ValueError:
        return 4


def default_threads() -> int:
    """Threads for sessions that ask for the default (0: onnxruntime uses every core). ONNXPRESS_ORT_THREADS
    caps it, so sweep workers sharing a machine each keep to their own core and give the same numbers as a
    serial run."""
    try:
        return max(int(os.environ.get("ONNXPRESS_ORT_THREADS", "0")), 0)
    except ValueError:
        return 0


def make_session(
    model: ir.Model | onnx.ModelProto | bytes | str | os.PathLike[str],
    *,
    optimization: str = "disable",
    threads: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    low_memory: bool = False,
) -> ort.InferenceSession:
    """An ORT session; ``optimization`` is disable|basic|extended|all (checks use disable: pure graph semantics)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    options.intra_op_num_threads = threads or default_threads()
    options.log_severity_level = log_level()
    if low_memory:  # no arena: memory goes back after each run (calibration, search trials). The planned
        # pattern stays (one block per run): without it PP-OCRv4 det calibration took 4.9 s instead of 4.4 s
        # for 17 MiB less peak; the arena kept det's auto search at 673 MiB instead of 411, no faster
        options.enable_cpu_mem_arena = False
    if uses_kernels(model):
        from onnxpress import kernels

        kernels.register(options)
    by_reference = _weights_by_reference(model, options) if isinstance(model, ir.Model) else None
    with contextlib.nullcontext(by_reference[0]) if by_reference else model_source(model) as source:
        try:
            return ort.InferenceSession(source, options, providers=list(providers))
        except Exception as err:
            raise BackendUnavailableError(f"onnxruntime cannot load the model: {str(err).strip().splitlines()[0]}") from err


def run_session(session: ort.InferenceSession, sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    feed = {i.name: np.asarray(sample[i.name]) for i in session.get_inputs() if i.name in sample}
    try:
        results = session.run(names, feed)
    except Exception as err:
        raise BackendUnavailableError(f"onnxruntime failed to run the model: {str(err).strip().splitlines()[0]}") from err
    return dict(zip(names, results))
