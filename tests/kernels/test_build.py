"""The build refuses headers that do not match the pinned hash and says what is missing, in one line each."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from onnxpress.kernels import build


def _fake_tarball(folder: Path) -> Path:
    path = folder / "fake.tgz"
    with tarfile.open(path, "w:gz") as archive:
        data = b"/* not onnxruntime */"
        info = tarfile.TarInfo(build._HEADERS_IN_TARBALL + "onnxruntime_c_api.h")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def test_headers_with_another_hash_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "_download_tarball", _fake_tarball)
    with pytest.raises(build.KernelBuildError, match="expected the pinned sha512-Bkzx.*refusing it"):
        build.headers_dir()
    assert not (tmp_path / "cache" / "ort-headers" / build.HEADERS_VERSION).exists()


def test_a_compiler_that_does_not_run_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(build.KernelBuildError, match="/nonexistent/g\\+\\+ does not run"):
        build.plan()


def test_the_library_is_cached_per_onnxruntime_version_and_source() -> None:
    import onnxruntime

    plan = build.plan()
    assert plan.library.parent.name.startswith(f"ort{onnxruntime.__version__}-")
    assert plan.key in str(plan.library)


def test_without_the_library_everything_else_still_runs_and_says_why(tmp_path: Path) -> None:
    """ONNXPRESS_KERNELS=off stands in for a machine without a compiler: available() gives the reason, the ORT
    backend's legalization leaves a 2:4 model dense with a warning, and library_path() is a clear error."""
    import os
    import subprocess
    import sys

    script = '''
import warnings, numpy as np, onnxpress
from onnxpress import kernels
from onnxpress.backends.base import CompileOptions, compile_model, get_backend
from onnxpress.kernels import formats, graphs
status = kernels.available()
print("available", status.ok, status.reason)
weight = formats.magnitude_nm(np.random.default_rng(0).standard_normal((256, 128)).astype(np.float32))
model = onnxpress.load(graphs.dense_matmul(weight))
artifact = compile_model(model, get_backend("ort"), CompileOptions(threads=1))
print("ops", sorted({n.op_type for n in model.graph}))
try:
    kernels.library_path()
except onnxpress.OnnxpressError as err:
    print("error", err)
'''
    env = {**os.environ, "ONNXPRESS_KERNELS": "off"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "available False turned off by ONNXPRESS_KERNELS=off" in result.stdout
    assert "ops ['MatMul']" in result.stdout
    assert "could use onnxpress kernels, but they are not available" in result.stderr
    assert "error onnxpress kernels are not available" in result.stdout
