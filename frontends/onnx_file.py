"""The ONNX frontend: load from a path, bytes or ModelProto into onnx-ir, and save atomically.

Loading validates before anything runs: the file parses as ONNX, every external-data reference stays inside
the model's folder and fits its file, the graph is acyclic. Weights in external files are memory-mapped, not
read. The input is never modified; saving refuses to overwrite the input or its external data.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError
from onnx import external_data_helper
from onnx_ir import external_data

from onnxpress.irpasses.cleanup.topo_sort import sort_or_explain
from onnxpress.irpasses.core.errors import ExternalDataError, InvalidModelError, UnsafeOutputError
from onnxpress.irpasses.core.opsets import domain_version, schema
from onnxpress.irpasses.core.progress import progress


def default_file_mode() -> int:
    """0666 minus the process umask: the mode a plain open() would have given a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[str]:
    """A temporary path beside ``target`` to write to; renamed over ``target`` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; outputs get the usual umask mode
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
from onnxpress.irpasses.core.verify import INPUT_PROBLEMS, model_problems, node_label, onnx_ir_logs, subgraphs, warn_onnx_ir

SOURCE_KEY = "onnxpress.source"
"""``model.meta`` key holding the resolved path of the file a model was loaded from."""

_EXTERNAL_DATA_THRESHOLD = 1_800_000_000
_IR_INITIALIZERS_APART = 4
"""IR version 4 allowed initializers that are not graph inputs; older files are read as version 4."""


def _describe(source: object) -> str:
    return f"'{source}'" if isinstance(source, (str, os.PathLike)) else "the given model"


def _read_proto(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise InvalidModelError(f"model file '{path}' does not exist")
    if not path.is_file():
        raise InvalidModelError(f"'{path}' is not a file")
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise InvalidModelError(
            f"'{path}' is not a readable ONNX model: {type(err).__name__}: {str(err).strip() or 'cannot parse'}",
            hint="the file may be truncated, or not an ONNX protobuf (.onnx) file",
        ) from err


def _check_is_model(proto: onnx.ModelProto, what: str) -> None:
    missing = []
    if proto.ir_version <= 0:
        missing.append("IR version")
    if not proto.HasField("graph"):
        missing.append("graph")
    if not proto.opset_import:
        missing.append("opset imports")
    if missing:
        raise InvalidModelError(
            f"{what} is not an ONNX model: it lacks {', '.join(missing)}",
            hint="the file may be truncated, or not an ONNX protobuf (.onnx) file",
        )


def check_external_data(proto: onnx.ModelProto, base_dir: Path | None, what: str) -> None:
    """Every external reference must resolve inside ``base_dir`` to a file long enough to hold it."""
    base = base_dir.resolve() if base_dir is not None else None
    for tensor in external_data_helper._get_all_tensors(proto):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        location = info.location or ""
        label = f"tensor '{tensor.name}' of {what}"
        if base is None:
            raise ExternalDataError(f"{label} keeps its data in '{location}', but the model was not loaded from a file", hint="load it from its path")
        if not location or os.path.isabs(location) or location.startswith(("/", "\\")):
            raise ExternalDataError(f"{label}: external-data location '{location}' must be a relative path inside the model's folder")
        target = (base / location).resolve()
        if target != base and base not in target.parents:
            raise ExternalDataError(f"{label}: external-data location '{location}' escapes the model's folder '{base}'")
        if not target.is_file():
            raise ExternalDataError(f"{label}: external-data file '{location}' is missing (looked for {target})")
        size = target.stat().st_size
        offset = int(info.offset or 0)
        length = int(info.length) if info.length else None
        end = offset + (length or 0)
        if offset > size or end > size:
            raise ExternalDataError(
                f"{label}: external data at offset {offset}, length {length} runs past the end of '{location}' ({size} bytes)",
                hint="the data file is truncated or belongs to another model",
            )


def _convert_opset(proto: onnx.ModelProto, target_opset: int, what: str) -> onnx.ModelProto:
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if current == target_opset:
        return proto
    try:
        from onnx import version_converter

        return version_converter.convert_version(proto, target_opset)
    except Exception as err:
        raise InvalidModelError(f"cannot convert {what} from opset {current} to {target_opset}: {err}") from err


def load(
    source: str | os.PathLike[str] | bytes | onnx.ModelProto | ir.Model, *, target_opset: int | None = None,
    decode_packed: bool = True, allow_invalid: bool = False,
) -> ir.Model:
    """Load and validate a model. Paths keep external weights on disk (memory-mapped). Weights packed by
    ``entropy-code`` (onnxpress.DecodeWeights nodes) are decoded into plain initializers unless
    ``decode_packed`` is False, so every pass and backend sees ordinary constants.

    A model that would fail in every runtime is refused with InvalidModelError naming the node or value:
    dangling references, names that are not UTF-8, cycles, duplicate value names, tensors whose data does
    not fit their declared type and shape, nodes contradicting their op's schema. ``allow_invalid`` lets
    dangling references and tensor contradictions through with a warning, for cleanup to repair (e.g. by
    removing the dead nodes that hold them); what onnx-ir cannot represent or write (unparsable bytes, non-UTF-8 names, cycles, duplicate
    names) is refused regardless."""
    if isinstance(source, ir.Model):
        return source
    what = _describe(source)
    base_dir: Path | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        proto = _read_proto(path)
        base_dir = path.parent
    elif isinstance(source, bytes):
        try:
            proto = onnx.load_model_from_string(source)
        except (DecodeError, ValueError, RuntimeError) as err:
            raise InvalidModelError(f"the given bytes are not an ONNX model: {err}") from err
    elif isinstance(source, onnx.ModelProto):
        proto = source
    else:
        raise InvalidModelError(f"cannot load a model from {type(source).__name__} (expected a path, bytes or onnx.ModelProto)")
    _check_is_model(proto, what)
    check_external_data(proto, base_dir, what)
    tensor_problems = _tensor_problems(proto, _source_size(source))
    if target_opset is not None:
        proto = _convert_opset(proto, target_opset, what)
    with onnx_ir_logs() as logged:
        try:
            model = ir.serde.deserialize_model(proto)
        except Exception as err:
            raise InvalidModelError(f"{what} could not be read into the IR: {_innermost(err)}") from err
    if base_dir is not None:
        external_data.set_base_dir(model.graph, str(base_dir))
        model.meta[SOURCE_KEY] = str(Path(source).resolve())  # type: ignore[arg-type]
    _check_names(model, what)
    _check_attribute_types(model, what)
    if model.ir_version < _IR_INITIALIZERS_APART:
        model.ir_version = _IR_INITIALIZERS_APART  # passes keep constants as initializers only, which IR 3 forbids
    problems = tensor_problems + _check_structure(model, what)
    if problems and not allow_invalid:
        raise InvalidModelError(f"{what} is malformed: {'; '.join(problems[:3])}",
                                hint="--allow-invalid passes it through cleanup to repair it")
    if problems:
        model.meta[INPUT_PROBLEMS] = problems
        warnings.warn(f"{what} is malformed (loaded as asked): {'; '.join(problems[:3])}", stacklevel=2)
    else:  # onnx-ir's notes on a model we accept (its notes on dangling inputs are in our own message above)
        warn_onnx_ir(logged, f"reading {what}")
    if decode_packed and any(o == "onnxpress" for o in model.opset_imports):
        from onnxpress.kernels.packed import decode_packed as decode

        decode(model)
    return model


def _check_structure(model: ir.Model, what: str) -> list[str]:
    """Structural problems (dangling references, undefined outputs); raises on a cycle, sorts an unsorted file."""
    sort_or_explain(model.graph, f"graph of {what}")
    for function in model.functions.values():
        sort_or_explain(function, f"function '{function.name}' of {what}")
    return model_problems(model)


def _innermost(err: BaseException) -> str:
    """The root cause's message: onnx-ir wraps it in SerdeErrors that name only the enclosing graph."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {str(err).strip() or 'no details'}"


def _source_size(source: object) -> int | None:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, (str, os.PathLike)):
        return Path(source).stat().st_size
    return None


def _not_utf8(text: object) -> bool:
    """onnx-ir keeps a protobuf string that is not valid UTF-8 as bytes; it cannot write it back."""
    if isinstance(text, bytes):
        return True
    if isinstance(text, str) and not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return True
    return False


def _graph_texts(graph: ir.Graph | ir.Function) -> Iterator[tuple[object, str]]:
    """Every name in ``graph`` (and its subgraphs) with a description of where it is."""
    yield graph.name, "the graph name"
    for value in graph.inputs:
        yield value.name, "a graph input name"
    for value in graph.outputs:
        yield value.name, "a graph output name"
    if isinstance(graph, ir.Graph):
        for name in graph.initializers:
            yield name, "an initializer name"
    for node in graph:
        where = node_label(node) if not _not_utf8(node.name) and not _not_utf8(node.op_type) else f"node #{_index(graph, node)}"
        yield node.name, f"the name of {where}"
        yield node.op_type, f"the op type of {where}"
        yield node.domain, f"the domain of {where}"
        for value in (*node.inputs, *node.outputs):
            if value is not None:
                yield value.name, f"a value name at {where}"
        for key in node.attributes:
            yield key, f"an attribute name of {where}"
        for sub in subgraphs(node):
            yield from _graph_texts(sub)


def _index(graph: ir.Graph | ir.Function, node: ir.Node) -> int:
    return next(i for i, n in enumerate(graph) if n is node)


def _model_texts(model: ir.Model) -> Iterator[tuple[object, str]]:
    yield model.producer_name, "the producer name"
    yield model.producer_version, "the producer version"
    yield model.domain, "the model domain"
    yield model.doc_string, "the model doc string"
    for key, value in model.metadata_props.items():
        yield key, "a metadata key"
        yield value, f"the metadata value of '{key!r}'"
    for domain in model.opset_imports:
        yield domain, "an opset domain"
    yield from _graph_texts(model.graph)
    for function in model.functions.values():
        yield from _graph_texts(function)


def _check_names(model: ir.Model, what: str) -> None:
    """Refuse names that are not valid UTF-8: protobuf and onnx.checker let them by, onnx-ir cannot save them."""
    for text, where in _model_texts(model):
        if _not_utf8(text):
            raise InvalidModelError(
                f"{what} is malformed: {where} is not valid UTF-8 ({bytes(text) if isinstance(text, bytes) else text!r})",
                hint="ONNX strings must be UTF-8; re-export the model",
            )


def _check_attribute_types(model: ir.Model, what: str) -> None:
    """Refuse an attribute without a type (a damaged file), an attribute whose type is not the one its op's
    schema declares, a Constant without exactly one value attribute, and more outputs than the op has: every
    runtime refuses such a node, and passes that read it (Constant folding, lifting) would fail on it."""
    graphs: list[ir.Graph | ir.Function] = [model.graph, *model.functions.values()]
    for graph in graphs:
        opsets = graph.opset_imports if isinstance(graph, ir.Function) else model.opset_imports
        for node in ir.traversal.RecursiveGraphIterator(graph):
            for name, attr in node.attributes.items():
                if attr.type == ir.AttributeType.UNDEFINED:
                    raise InvalidModelError(f"{what} is malformed: attribute '{name}' of {node_label(node)} has no type")
            problem = _schema_contradiction(node, opsets)
            if problem:
                raise InvalidModelError(f"{what} is malformed: {problem}",
                                        hint="the file is damaged, or its exporter wrote a node its op does not allow")


def _schema_contradiction(node: ir.Node, opsets: Mapping[str, int]) -> str | None:
    """What in ``node`` contradicts its op's ONNX schema at the imported opset (None for unknown ops: those
    are the checker's to warn about)."""
    version = domain_version(opsets, node.domain)
    found = None if version is None else schema(node.op_type, node.domain, version)
    if found is None:
        return None
    label = f"{node_label(node)} ({node.op_type}-{found.since_version})"
    if len(node.outputs) > found.max_output:
        return f"{label} has {len(node.outputs)} outputs, but the op has at most {found.max_output}"
    for name, attr in node.attributes.items():
        declared = found.attributes.get(name)
        if declared is None or attr.is_ref():
            continue
        expected = ir.AttributeType(int(declared.type))
        if attr.type != expected:
            return f"attribute '{name}' of {label} is {attr.type.name}, but the op's schema declares {expected.name}"
    if node.op_type == "Constant" and len(node.attributes) != 1:
        given = ", ".join(repr(a) for a in node.attributes) or "none"
        return f"{label} must have exactly one value attribute, but has {len(node.attributes)} ({given})"
    return None


_CHECKED_TENSOR_BYTES = 16 << 20
"""Inline tensors up to this size have their data length checked (reading the length of a protobuf bytes
field copies it); larger ones are checked against the size of the file."""

_TYPED_FIELDS = {
    "float_data": {1: 1, 14: 2}, "int64_data": {7: 1}, "double_data": {11: 1, 15: 2}, "uint64_data": {12: 1, 13: 1},
    "int32_data": {2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 9: 1, 10: 1, 16: 1, 17: 1, 18: 1, 19: 1, 20: 1, 24: 1},
    "string_data": {8: 1},
}


def _tensor_problems(proto: onnx.ModelProto, source_size: int | None) -> list[str]:
    """Initializers and Constant tensors of the main graph whose data contradicts their type and shape."""
    problems = []
    tensors = [(t, f"initializer '{t.name}'") for t in proto.graph.initializer]
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            tensors += [(a.t, f"the value of Constant node '{node.name}'") for a in node.attribute if a.HasField("t")]
    for tensor, label in tensors:
        why = _tensor_contradiction(tensor, source_size)
        if why:
            problems.append(f"{label} {why}")
    return problems


def _tensor_contradiction(tensor: onnx.TensorProto, source_size: int | None) -> str | None:
    """What is wrong with ``tensor``'s declared type, shape and data, or None."""
    if any(d < 0 for d in tensor.dims):
        return f"has a negative dimension {list(tensor.dims)}"
    try:
        dtype = ir.DataType(tensor.data_type)
    except ValueError:
        return f"has unknown data type {tensor.data_type}"
    if dtype == ir.DataType.UNDEFINED:
        return "has no data type"
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    count = math.prod(tensor.dims)
    if tensor.HasField("raw_data") and dtype != ir.DataType.STRING:
        expected = math.ceil(count * dtype.itemsize)
        if expected > _CHECKED_TENSOR_BYTES:
            fits = source_size is None or expected <= source_size
            too_big = f"declares {expected} bytes of {dtype.name} {list(tensor.dims)}, more than the whole file ({source_size})"
            return None if fits else too_big
        got = len(tensor.raw_data)
        return None if got == expected else f"holds {got} bytes, but {dtype.name} {list(tensor.dims)} takes {expected}"
    for field, per_type in _TYPED_FIELDS.items():
        if tensor.data_type in per_type:  # without raw_data, the values live in the field of the tensor's type
            got, expected = len(getattr(tensor, field)), count * per_type[tensor.data_type]
            if got != expected:
                return f"holds {got} values in {field}, but {dtype.name} {list(tensor.dims)} takes {expected}"
    return None


def _protected_paths(model: ir.Model) -> set[Path]:
    protected: set[Path] = set()
    source = model.meta.get(SOURCE_KEY)
    if source:
        protected.add(Path(source).resolve())
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            protected.add(Path(tensor.path).resolve())
    return protected


def _has_external(model: ir.Model) -> bool:
    return any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())


def check_output_path(model: ir.Model, path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an output that would overwrite the input model or its external data."""
    target = Path(path).resolve()
    protected = _protected_paths(model)
    for candidate in (target, target.parent / (target.name + ".data")):
        if candidate in protected:
            raise UnsafeOutputError(
                f"refusing to write '{candidate}': the model reads from that file (input files are never modified)",
                hint="choose another output path",
            )


def save(
    model: ir.Model | onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    max_ir_version: int | None = None,
    external: bool | None = None,
    show_progress: bool | None = None,
) -> Path:
    """Write ``model`` atomically; weights go to ``<name>.data`` when the model had external data or is large.

    Refuses to overwrite the file the model was loaded from or any external-data file it still reads.
    """
    if isinstance(model, onnx.ModelProto):
        model = ir.serde.deserialize_model(model)
    check_output_path(model, path)
    target = Path(path).resolve()
    data_name = target.name + ".data"
    target.parent.mkdir(parents=True, exist_ok=True)
    if external is None:
        from onnxpress.irpasses.core.manager import weight_bytes

        external = _has_external(model) or weight_bytes(model) > _EXTERNAL_DATA_THRESHOLD
    original_ir = model.ir_version
    if max_ir_version is not None:
        model.ir_version = min(original_ir, max_ir_version)
    try:
        with atomic_path(target) as tmp:
            if external:
                with progress(f"saving {target.name}", None, show_progress) as bar:
                    ir.save(model, tmp, external_data=data_name, callback=lambda tensor, info: bar.advance())
            else:
                write_inline(model, tmp)
    finally:
        model.ir_version = original_ir
    return target


_STREAMED_TENSOR_BYTES = 1 << 16


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field_header(field: int, length: int) -> bytes:
    """Tag and length of a length-delimited protobuf field."""
    return _varint(field << 3 | 2) + _varint(length)


def write_inline(model: ir.Model, path: str | os.PathLike[str]) -> None:
    """One .onnx file without a whole-model copy in memory: the model without its large weights first, then each
    weight as a ModelProto.graph fragment holding one GraphProto.initializer. Protobuf merges repeated
    embedded-message fields when it parses, so readers see one graph with every initializer; only one tensor is
    serialized at a time (a 54 MB 4-bit MiniLM held the whole proto plus its bytes: +108 MB)."""
    from onnxpress.irpasses.core.snapshot import snapshot

    large = [n for n, v in model.graph.initializers.items() if v.const_value is not None and v.const_value.nbytes >= _STREAMED_TENSOR_BYTES]
    if not large:
        ir.save(model, path)
        return
    head = snapshot(model)
    tensors = [head.graph.initializers.pop(name).const_value for name in large]
    with open(path, "wb") as f:
        f.write(ir.to_proto(head).SerializeToString())
        del head
        for name, tensor in zip(large, tensors):
            parts = _tensor_parts(name, tensor)
            size = sum(len(p) for p in parts)
            initializer = _field_header(5, size)  # GraphProto.initializer
            f.write(_field_header(7, len(initializer) + size))  # ModelProto.graph
            f.write(initializer)
            for part in parts:
                f.write(part)


_RAW_DTYPES = frozenset({
    ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT16,
    ir.DataType.UINT16, ir.DataType.INT32, ir.DataType.UINT32, ir.DataType.INT64, ir.DataType.UINT64, ir.DataType.BOOL,
})


def _tensor_parts(name: str, tensor: ir.TensorProtocol) -> list[bytes | memoryview]:
    """A TensorProto as byte pieces: its header, then raw_data straight from the array's buffer (no copy where
    the array is already contiguous little-endian); dtypes needing packing go through onnx-ir's serializer."""
    import sys

    import numpy as np

    if tensor.dtype in _RAW_DTYPES and sys.byteorder == "little":
        array = np.ascontiguousarray(tensor.numpy())
        meta = onnx.TensorProto(name=name, data_type=int(tensor.dtype), dims=list(array.shape), doc_string=tensor.doc_string or "")
        for key, value in (getattr(tensor, "metadata_props", None) or {}).items():
            meta.metadata_props.add(key=key, value=value)
        header = meta.SerializeToString()
        return [header, _field_header(9, array.nbytes), memoryview(array).cast("B")]  # TensorProto.raw_data
    proto = ir.serde.serialize_tensor(tensor)
    proto.name = name
    return [proto.SerializeToString()]
