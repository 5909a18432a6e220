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
            try:
                arrays = npz_arrays(self.path)
            except Exception as err:
                raise DataError(f"cannot read sample data '{self.path}': {err} (expected an .npz file)") from err
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
                try:
                    with np.load(f) as npz:
                        yield {k: npz[k] for k in npz.files}
                except Exception as err:
                    raise DataError(f"cannot read sample file '{f}': {err}") from err
        else:
            arrays = npz_arrays(self.path)
            for i in range(len(self)):
                yield {k: np.asarray(a[i]) for k, a in arrays.items()}  # one sample read from disk


class _StoredArray:
    """An uncompressed .npy member of an .npz, read one index of axis 0 at a time with a plain file read (no
    mapping, whose touched pages would stay in the process's resident set)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.row = int(np.prod(shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, index: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset + index * self.row * self.dtype.itemsize)
            return np.fromfile(f, dtype=self.dtype, count=self.row).reshape(self.shape[1:])


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
            stored = _stored_member(raw, path, info) if info.compress_type == zipfile.ZIP_STORED else None
            if stored is None:
                with archive.open(info) as member:
                    stored = np.lib.format.read_array(member, allow_pickle=False)
            arrays[name] = stored
    return arrays


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
