"""Build the native kernel library once per source/compiler/onnxruntime version and cache it.

The onnxruntime wheel ships no C/C++ headers, so the public ones come from the npm package
``com.github.asus4.onnxruntime`` (MIT; ORT 1.29's headers, API 29, which onnxruntime 1.31 serves), fetched with
npm at build time, checked against a pinned sha512 and reduced to its header folder. Nothing third-party is
committed. The library links to nothing but libstdc++: onnxruntime hands it the API table when a session
registers it, so one build serves every onnxruntime from 1.29 on.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HEADERS_PACKAGE = "com.github.asus4.onnxruntime"
HEADERS_VERSION = "0.4.9"
HEADERS_INTEGRITY = "sha512-BkzxduSZ9IkeDP6Q8lz2TFU2ie7hSSvS7ZIfzMooExoq0CNzJnuuGaUJ7IsojBgqO4ouD1jXah8OYyJbCN29Fg=="
_HEADERS_IN_TARBALL = "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/"
_TARBALL_URL = f"https://registry.npmjs.org/{HEADERS_PACKAGE}/-/{HEADERS_PACKAGE}-{HEADERS_VERSION}.tgz"
_REQUIRED_HEADERS = ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h", "onnxruntime_cxx_inline.h", "onnxruntime_float16.h")

SOURCE_DIR = Path(__file__).with_name("src")
LIBRARY_NAME = "libonnxpress_kernels.so"
_COMMON_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra")
# Each translation unit with the instructions it may use; ops.cc picks one at run time (layouts.h).
_UNITS = {
    "scalar.cc": (),
    "entropy.cc": (),
    "ops.cc": (),
    "avx2.cc": ("-mavx2", "-mfma", "-mf16c"),
    "avx512.cc": ("-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mfma", "-mf16c"),
    "avx512vnni.cc": ("-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-mfma"),
}


class KernelBuildError(RuntimeError):
    """The kernel library could not be built here; the message says which step failed and why."""


@dataclass(frozen=True)
class BuildPlan:
    compiler: str
    compiler_version: str
    ort_version: str
    key: str
    library: Path


def cache_root() -> Path:
    """``$ONNXPRESS_CACHE``, else ``$XDG_CACHE_HOME/onnxpress``, else ``~/.cache/onnxpress``."""
    if os.environ.get("ONNXPRESS_CACHE"):
        return Path(os.environ["ONNXPRESS_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "onnxpress"


def _compiler() -> tuple[str, str]:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not compiler:
        raise KernelBuildError("no C++ compiler found (g++, c++ or clang++; or set CXX): apt-get install g++")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise KernelBuildError(f"the C++ compiler {compiler} does not run: {err}") from err
    return compiler, version.splitlines()[0] if version else "unknown"


def plan() -> BuildPlan:
    """Where the library for this source, compiler and onnxruntime lives (built or not)."""
    import onnxruntime

    compiler, compiler_version = _compiler()
    digest = hashlib.sha256()
    for path in sorted(SOURCE_DIR.iterdir()):
        if path.suffix in (".cc", ".h", ".inc"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(repr((_COMMON_FLAGS, _UNITS, compiler_version, onnxruntime.__version__, HEADERS_INTEGRITY)).encode())
    key = digest.hexdigest()[:16]
    library = cache_root() / "kernels" / f"ort{onnxruntime.__version__}-{key}" / LIBRARY_NAME
    return BuildPlan(compiler, compiler_version, onnxruntime.__version__, key, library)


def _sha512_integrity(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _download_tarball(folder: Path) -> Path:
    """npm's own client first (its registry settings and proxy), plain HTTPS from the same registry second."""
    npm = shutil.which("npm")
    if npm:
        result = subprocess.run(
            [npm, "pack", f"{HEADERS_PACKAGE}@{HEADERS_VERSION}", "--json", "--pack-destination", str(folder)],
            capture_output=True, text=True, cwd=folder,
        )
        if result.returncode == 0:
            with contextlib.suppress(ValueError, KeyError, IndexError):
                return folder / json.loads(result.stdout)[0]["filename"]
            found = sorted(folder.glob("*.tgz"))
            if found:
                return found[0]
    target = folder / f"{HEADERS_PACKAGE}-{HEADERS_VERSION}.tgz"
    try:
        with urllib.request.urlopen(_TARBALL_URL, timeout=120) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        raise KernelBuildError(
            f"could not fetch onnxruntime's headers ({HEADERS_PACKAGE}@{HEADERS_VERSION}) from the npm registry: {err}"
        ) from err
    return target


def headers_dir() -> Path:
    """The onnxruntime header folder, fetched and verified on first use."""
    target = cache_root() / "ort-headers" / HEADERS_VERSION
    if all((target / name).is_file() for name in _REQUIRED_HEADERS):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        tarball = _download_tarball(Path(tmp))
        integrity = _sha512_integrity(tarball)
        if integrity != HEADERS_INTEGRITY:
            raise KernelBuildError(
                f"{tarball.name} has integrity {integrity[:24]}..., expected the pinned {HEADERS_INTEGRITY[:24]}...: refusing it"
            )
        staged = Path(tmp) / "headers"
        staged.mkdir()
        with tarfile.open(tarball) as archive:
            for member in archive.getmembers():
                name = member.name
                inside = name[len(_HEADERS_IN_TARBALL):] if name.startswith(_HEADERS_IN_TARBALL) else ""
                if member.isfile() and inside.endswith(".h") and "/" not in inside:
                    source = archive.extractfile(member)
                    assert source is not None
                    (staged / Path(name).name).write_bytes(source.read())
        missing = [name for name in _REQUIRED_HEADERS if not (staged / name).is_file()]
        if missing:
            raise KernelBuildError(f"{HEADERS_PACKAGE}@{HEADERS_VERSION} lacks {', '.join(missing)}")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return target


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(force: bool = False, verbose: bool = False) -> Path:
    """Build (or find) the library; returns its path. Raises KernelBuildError with the failing step."""
    target = plan()
    if target.library.is_file() and not force:
        return target.library
    with _build_lock(target.library.parent.parent):
        if target.library.is_file() and not force:
            return target.library
        include = headers_dir()
        with tempfile.TemporaryDirectory(dir=target.library.parent.parent, prefix=".build-") as tmp:
            objects = []

            def compile_unit(unit: str) -> Path:
                obj = Path(tmp) / (unit + ".o")
                command = [target.compiler, *_COMMON_FLAGS, *_UNITS[unit], "-I", str(include), "-c",
                           str(SOURCE_DIR / unit), "-o", str(obj)]
                if verbose:
                    print(" ".join(command))
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    raise KernelBuildError(f"compiling kernels/src/{unit} failed:\n{result.stderr[-4000:]}")
                return obj

            with ThreadPoolExecutor(max_workers=max(1, min(len(_UNITS), os.cpu_count() or 1))) as pool:
                objects = list(pool.map(compile_unit, sorted(_UNITS)))
            staged = Path(tmp) / LIBRARY_NAME
            result = subprocess.run([target.compiler, "-shared", "-o", str(staged), *map(str, objects)],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                raise KernelBuildError(f"linking {LIBRARY_NAME} failed:\n{result.stderr[-4000:]}")
            target.library.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target.library)
    return target.library
