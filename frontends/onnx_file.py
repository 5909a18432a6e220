"""The ONNX frontend: load from a path, bytes or ModelProto into onnx-ir, and save atomically.

Loading validates before anything runs: the file parses as ONNX, every external-data reference stays inside
the model's folder and fits its file, the graph is acyclic. Weights in external files are memory-mapped, not
read. The input is never modified; saving refuses to overwrite the input or its external data.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError
from onnx import external_data_helper
from onnx_ir import external_data

from onnxpress.irpasses.cleanup.topo_sort import sort_or_explain
from onnxpress.irpasses.core.errors import ExternalDataError, InvalidModelError, UnsafeOutputError
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
from onnxpress.irpasses.core.verify import verification_problems

SOURCE_KEY = "onnxpress.source"
"""``model.meta`` key holding the resolved path of the file a model was loaded from."""

_EXTERNAL_DATA_THRESHOLD = 1_800_000_000


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
    decode_packed: bool = True,
) -> ir.Model:
    """Load and validate a model. Paths keep external weights on disk (memory-mapped). Weights packed by
    ``entropy-code`` (onnxpress.DecodeWeights nodes) are decoded into plain initializers unless
    ``decode_packed`` is False, so every pass and backend sees ordinary constants."""
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
        except DecodeError as err:
            raise InvalidModelError(f"the given bytes are not an ONNX model: {err}") from err
    elif isinstance(source, onnx.ModelProto):
        proto = source
    else:
        raise InvalidModelError(f"cannot load a model from {type(source).__name__} (expected a path, bytes or onnx.ModelProto)")
    _check_is_model(proto, what)
    check_external_data(proto, base_dir, what)
    if target_opset is not None:
        proto = _convert_opset(proto, target_opset, what)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as err:
        raise InvalidModelError(f"{what} could not be read into the IR: {type(err).__name__}: {err}") from err
    if base_dir is not None:
        external_data.set_base_dir(model.graph, str(base_dir))
        model.meta[SOURCE_KEY] = str(Path(source).resolve())  # type: ignore[arg-type]
    _check_structure(model, what)
    if decode_packed and any(o == "onnxpress" for o in model.opset_imports):
        from onnxpress.kernels.packed import decode_packed as decode

        decode(model)
    return model


def _check_structure(model: ir.Model, what: str) -> None:
    sort_or_explain(model.graph, f"graph of {what}")  # raises on a cycle; sorts an unsorted file
    problems = verification_problems(model.graph)
    if problems:
        raise InvalidModelError(f"{what} is malformed: {'; '.join(problems[:3])}")


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
