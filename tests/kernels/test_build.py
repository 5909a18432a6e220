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
