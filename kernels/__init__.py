"""Our own CPU kernels for onnxruntime: ops in the ``onnxpress`` domain from one native library.

- ``SparseMatMul``: N:M-sparse weights (2:4, 4:8; fp32, fp16 or int8 values) times fp32 activations.
- ``LutMatMul``: 2/3/4-bit codes into per-tensor, per-column or per-group codebooks, never made dense.
- ``DecodeWeights``: an entropy-coded (rANS) blob turned into a tensor once, at session load.

The library is built on first use (``build.py``: onnxruntime's headers fetched from npm with a pinned hash,
g++, cached per source, compiler and onnxruntime version), dispatches AVX-512 / AVX2 / portable code at run
time, and runs on the session's own intra-op threads. Any onnxruntime user can load it::

    options.register_custom_ops_library(onnxpress.kernels.library_path())

Each op has a numpy reference in ``reference.py``; ``formats.py`` packs weights into the ops' inputs.
Without a compiler or the headers everything else in onnxpress still works; ``available()`` says why not.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass

from onnxpress.irpasses.core.errors import BackendUnavailableError

DOMAIN = "onnxpress"
OPS = ("SparseMatMul", "LutMatMul", "DecodeWeights")
_ISA_NAMES = {0: "portable", 1: "avx2", 2: "avx512"}


@dataclass(frozen=True)
class KernelStatus:
    ok: bool
    reason: str
    path: str | None = None


@functools.lru_cache(maxsize=1)
def _status() -> KernelStatus:
    from onnxpress.kernels.build import KernelBuildError, build

    if os.environ.get("ONNXPRESS_KERNELS") == "off":
        return KernelStatus(False, "turned off by ONNXPRESS_KERNELS=off")
    try:
        path = build()
    except KernelBuildError as err:
        return KernelStatus(False, str(err))
    except ImportError as err:
        return KernelStatus(False, f"onnxruntime is not importable: {err}")
    return KernelStatus(True, f"built at {path}", str(path))


def available() -> KernelStatus:
    """Whether the kernel library is usable here (building it if needed), and if not, why."""
    return _status()


def library_path() -> str:
    """Path of the custom-op library for ``SessionOptions.register_custom_ops_library``."""
    status = _status()
    if not status.ok or status.path is None:
        raise BackendUnavailableError(
            f"onnxpress kernels are not available: {status.reason}",
            hint="install g++ (and npm, or network access to the npm registry for onnxruntime's headers), "
            "then run: python -m onnxpress.kernels build",
        )
    return status.path


def register(options: object) -> None:
    """Register the library on an ``onnxruntime.SessionOptions``."""
    options.register_custom_ops_library(library_path())  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=1)
def native() -> ctypes.CDLL:
    """The library through ctypes: the blob encoder/decoder and the ISA in use (for packing and tests)."""
    lib = ctypes.CDLL(library_path())
    lib.opx_isa.restype = ctypes.c_int
    lib.opx_cpu_isa.restype = ctypes.c_int
    lib.opx_has_vnni.restype = ctypes.c_int
    lib.opx_encode.restype = ctypes.c_int64
    lib.opx_encode.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                               ctypes.c_void_p, ctypes.c_uint64]
    lib.opx_decode.restype = ctypes.c_int
    lib.opx_decode.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                               ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_uint64]
    lib.opx_blob_count.restype = ctypes.c_int64
    lib.opx_blob_count.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    return lib


def isa() -> str:
    """The instruction set the kernels run with in this process (ONNXPRESS_KERNELS_ISA=avx2|scalar lowers it)."""
    return _ISA_NAMES[native().opx_isa()]


def int8_lut() -> bool:
    """Whether LutMatMul's accuracy level 4 runs its int8 (AVX-512 VNNI) path here; else the float path."""
    return bool(native().opx_has_vnni())


def cpu_isa() -> str:
    """The best instruction set this CPU offers the kernels."""
    return _ISA_NAMES[native().opx_cpu_isa()]
