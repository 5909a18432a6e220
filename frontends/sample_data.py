"""Sample and calibration data: the CLI's ``DATA`` format, Python iterables, and generated smoke-test inputs.

``DATA`` is an ``.npz`` with one array per model input, axis 0 indexing samples (sample i is fed as
``arr[i]``, so a model with a batch axis takes arrays shaped [samples, batch, ...]), or a folder of ``.npz`` files, one sample each (for inputs whose shape varies).
Samples are streamed: a folder is read one file at a time, an uncompressed ``.npz`` one sample at a time.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.errors import DataError

Sample = Mapping[str, np.ndarray]


class NpzSamples:
    """Re-iterable samples from an ``.npz`` (axis 0 = samples) or a folder of per-sample ``.npz`` files."""

    def __init__(self, path: str | os.PathLike[str], limit: int | None = None) -> None:
        self.path = Path(path)
        self.limit = limit
        if self.path.is_dir():
            self.files = sorted(self.path.glob("*.npz"))
            if not self.files:
                raise DataError(f"data folder '{self.path}' holds no .npz files (expected one .npz per sample)")
        elif self.path.is_file():
            self.files = []
            arrays = _read(self.path)
            self._count = min((len(a) for a in arrays.values()), default=0)
            if not arrays or self._count == 0:
                raise DataError(f"sample data '{self.path}' is empty (expected one array per model input, axis 0 = samples)")
        else:
            raise DataError(f"sample data '{self.path}' does not exist")

    def __len__(self) -> int:
        n = len(self.files) if self.files else self._count
        return min(n, self.limit) if self.limit else n

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self.files:
            for f in self.files[: len(self)]:
                yield _finite({k: np.asarray(a) for k, a in _read(f, whole=True).items()}, f, None)
        else:
            arrays = _read(self.path)
            for i in range(len(self)):
                try:
                    sample = {k: np.asarray(a[i]) for k, a in arrays.items()}  # one sample read from disk
                except (OSError, ValueError) as err:
                    raise DataError(f"cannot read sample {i} of '{self.path}': {err}", hint="the file may be truncated") from err
                yield _finite(sample, self.path, i)


def _read(path: Path, whole: bool = False) -> dict[str, Any]:
    """``npz_arrays`` with every failure a DataError naming the file (``whole``: each array read in full)."""
    try:
        arrays = npz_arrays(path)
        return {k: (a.whole() if whole and isinstance(a, _StoredArray) else a) for k, a in arrays.items()}
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot read sample data '{path}': {type(err).__name__}: {err} (expected an .npz file)") from err


def _finite(sample: dict[str, np.ndarray], path: Path, index: int | None) -> dict[str, np.ndarray]:
    """Refuse NaN and Inf: calibration ranges and numeric checks computed from them are meaningless."""
    for name, array in sample.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            where = f"sample {index} of '{path}'" if index is not None else f"'{path}'"
            raise DataError(f"{where}: array '{name}' holds NaN or Inf values", hint="sample data must be finite numbers")
    return sample


class _StoredArray:
    """An uncompressed .npy member of an .npz, read one index of axis 0 at a time with a plain file read (no
    mapping, whose touched pages would stay in the process's resident set)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.row = int(np.prod(shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, index: int) -> np.ndarray:
        return self._read(index * self.row, self.row, self.shape[1:])

    def whole(self) -> np.ndarray:
        return self._read(0, len(self) * self.row, self.shape)

    def _read(self, start: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.dtype.itemsize)
            data = np.fromfile(f, dtype=self.dtype, count=count)
        if data.size != count:
            raise DataError(f"sample data '{self.path}' is truncated: {data.size} of {count} values at element {start}")
        return data.reshape(shape)


def npz_arrays(path: Path) -> dict[str, Any]:
    """The arrays of an ``.npz`` by name, indexable along axis 0. Members stored uncompressed (``np.savez``) in C
    order are read one sample at a time, so memory does not grow with the number of samples and counting them
    reads only headers (PP-OCRv4 det's 8 calibration pages, 70 MB, were read whole by every pass over the
    data); compressed members (``np.savez_compressed``) and Fortran-ordered ones are loaded whole."""
    import zipfile

    arrays: dict[str, Any] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                _check_header(path, name, info, member)
            stored = _stored_member(raw, path, info) if info.compress_type == zipfile.ZIP_STORED else None
            if stored is None:
                with archive.open(info) as member:
                    stored = np.lib.format.read_array(member, allow_pickle=False)
            arrays[name] = stored
    return arrays


_DEFLATE_MAX_RATIO = 1100
"""Deflate cannot expand data more than ~1032x: a member declaring more is lying about its size."""


def _check_header(path: Path, name: str, info: Any, member: Any) -> None:
    """Refuse, before any array is allocated, a member whose header declares Python objects (pickles are
    never loaded), a negative dimension, or more bytes than the archive holds for it."""
    version = np.lib.format.read_magic(member)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        return  # read_array reports the unsupported version
    shape, _, dtype = readers[version](member)
    label = f"array '{name}' of '{path}'"
    if dtype.hasobject:
        raise DataError(f"{label} holds Python objects (dtype {dtype}); pickled data is never loaded", hint="save plain numeric arrays")
    if any(d < 0 for d in shape):
        raise DataError(f"{label} declares a negative dimension {list(shape)}")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = info.file_size - member.tell()
    if declared > available or declared > info.compress_size * _DEFLATE_MAX_RATIO:
        held = max(available, 0)
        raise DataError(f"{label} declares shape {list(shape)} of {dtype} ({declared} bytes), but the file holds {held} for it",
                        hint="the file is truncated or its header is damaged")


def _stored_member(raw: Any, path: Path, info: Any) -> _StoredArray | None:
    """An uncompressed C-ordered .npy member, located in the archive (None: read it whole instead)."""
    import struct

    raw.seek(info.header_offset)
    local = raw.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        return None
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    raw.seek(info.header_offset + 30 + name_length + extra_length)
    version = np.lib.format.read_magic(raw)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        return None
    shape, fortran, dtype = readers[version](raw)
    if dtype.hasobject or fortran or not shape:
        return None
    return _StoredArray(path, raw.tell(), tuple(shape), dtype)


class IterableSamples:
    """Wrap a list, a re-iterable, or a zero-argument callable returning a fresh iterator."""

    def __init__(self, source: Iterable[Sample] | Callable[[], Iterable[Sample]]) -> None:
        self._source = source

    def __iter__(self) -> Iterator[Sample]:
        source = self._source() if callable(self._source) else self._source
        return iter(source)

    def __len__(self) -> int:
        """The source's length (a list's); a callable or unsized iterable has none (TypeError, as len() says),
        and fidelity searches then judge on the samples they fitted on, with a warning."""
        if callable(self._source) or not isinstance(self._source, Sized):
            raise TypeError("these samples have no length")
        return len(self._source)


def as_samples(data: object) -> Iterable[Sample] | None:
    """Normalize what users pass as data: a path, a dict of arrays (axis 0 = samples), an iterable or callable."""
    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        return NpzSamples(data)
    if isinstance(data, Mapping):
        arrays = {k: np.asarray(v) for k, v in data.items()}
        count = min((len(a) for a in arrays.values()), default=0)
        if count == 0:
            raise DataError("sample data is empty (expected one array per model input, axis 0 = samples)")
        return [{k: a[i] for k, a in arrays.items()} for i in range(count)]
    if isinstance(data, Iterator):
        warnings.warn("a one-shot iterator of samples can be read once; pass a list or a callable", stacklevel=2)
        return list(data)
    if callable(data) or isinstance(data, Iterable):
        return IterableSamples(data)  # type: ignore[arg-type]
    raise DataError(f"unsupported sample data of type {type(data).__name__} (expected a path, a dict of arrays, or an iterable)")


def _numpy_dtype(value: ir.Value) -> np.dtype | None:
    dtype = value.dtype
    if dtype is None:
        return None
    try:
        return dtype.numpy()
    except Exception:
        return None


def check_sample(sample: Sample, model: ir.Model, index: int = 0) -> None:
    """Raise DataError naming the input and what was expected when a sample does not fit the model."""
    inputs = {v.name: v for v in model.graph.inputs if v.name not in model.graph.initializers}
    given, wanted = set(sample), set(inputs)
    if given != wanted:
        missing, extra = sorted(wanted - given), sorted(given - wanted)
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unknown {', '.join(extra)}")
        raise DataError(
            f"sample {index}: input names do not match the model ({'; '.join(parts)}); model inputs are {', '.join(sorted(wanted))}"
        )
    for name, value in inputs.items():
        array = np.asarray(sample[name])
        expected = _numpy_dtype(value)
        if expected is not None and array.dtype != expected:
            raise DataError(f"sample {index}: input '{name}' has dtype {array.dtype}, the model expects {expected}")
        shape = value.shape
        if shape is None:
            continue
        dims = [d if isinstance(d, int) else str(d) for d in shape]
        if array.ndim != len(shape):
            raise DataError(f"sample {index}: input '{name}' has rank {array.ndim} {list(array.shape)}, the model expects rank {len(shape)} {dims}")
        for axis, (got, dim) in enumerate(zip(array.shape, shape)):
            if isinstance(dim, int) and dim >= 0 and got != dim:  # paddle2onnx writes -1 for dynamic
                raise DataError(f"sample {index}: input '{name}' axis {axis} is {got}, the model expects {dim} (shape {dims})")


def validated(samples: Iterable[Sample], model: ir.Model) -> Iterator[Sample]:
    """Yield samples after checking each; an empty source is an error."""
    count = 0
    for count, sample in enumerate(samples, 1):
        check_sample(sample, model, count - 1)
        yield sample
    if count == 0:
        raise DataError("sample data is empty: no sample to run")


def random_inputs(
    model: ir.Model, count: int = 1, seed: int = 0, dynamic_dim: int = 64, shapes: dict[str, list[int]] | None = None
) -> list[dict[str, np.ndarray]]:
    """Generated inputs for smoke tests only: leading symbolic dims are 1, other symbolic dims ``dynamic_dim``
    (or the full shapes given in ``shapes``).

    Floats are standard normal; integers are 0/1 (valid token ids, masks and indices in most models).
    """
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sample = {}
        for value in model.graph.inputs:
            if value.name in model.graph.initializers:
                continue
            dtype = _numpy_dtype(value) or np.dtype(np.float32)
            shape = value.shape
            if shape is None:
                raise DataError(f"input '{value.name}' has no shape in the model; give sample data (--inputs DATA)")
            dims = [d if isinstance(d, int) and d >= 0 else (1 if axis == 0 else dynamic_dim) for axis, d in enumerate(shape)]
            if shapes and value.name in shapes:
                dims = list(shapes[value.name])
            _check_generated_size(value.name, dims, dtype)
            if dtype == np.bool_:
                array = rng.random(dims) < 0.5
            elif np.issubdtype(dtype, np.integer):
                array = rng.integers(0, 2, size=dims).astype(dtype)
            elif np.issubdtype(dtype, np.floating) or dtype.kind == "V":
                array = rng.standard_normal(dims).astype(np.float32).astype(dtype)
            else:
                raise DataError(f"cannot generate data for input '{value.name}' of type {value.dtype}; give sample data")
            sample[value.name] = array
        samples.append(sample)
    return samples


_GENERATED_BYTES_LIMIT = 1 << 30


def _check_generated_size(name: str, dims: list[int], dtype: np.dtype) -> None:
    """Refuse to generate an input the model declares absurdly large (a damaged shape), before allocating it."""
    size = int(np.prod(dims, dtype=object)) * max(dtype.itemsize, 1)
    if any(d < 0 for d in dims) or size > _GENERATED_BYTES_LIMIT:
        raise DataError(f"input '{name}' declares shape {dims} ({size} bytes): too large to generate random data for",
                        hint="give sample data (--inputs DATA) or --shapes")
