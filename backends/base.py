"""The backend protocol: what a target can run, what it needs first, and how to compile, run and time it.

A backend is a plug-in registered under the ``onnxpress.backends`` entry point (ours register the same way).
Passes ask ``capability`` what they may emit; users ask ``availability`` whether an artifact can run here.
"""

from __future__ import annotations

import abc
import dataclasses
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir

from onnxpress.irpasses.core.errors import BackendUnavailableError
from onnxpress.irpasses.core.pass_base import Pass


@dataclasses.dataclass
class NodeSupport:
    node: str
    op: str
    supported: bool
    reason: str = ""


@dataclasses.dataclass
class Capability:
    """Per node: can the backend run it, and if not, why."""

    backend: str
    nodes: list[NodeSupport]

    @property
    def unsupported(self) -> list[NodeSupport]:
        return [n for n in self.nodes if not n.supported]

    def summary(self) -> str:
        bad = self.unsupported
        if not bad:
            return f"{self.backend}: all {len(self.nodes)} nodes supported"
        shown = "; ".join(f"{n.op} '{n.node}': {n.reason}" for n in bad[:5])
        return f"{self.backend}: {len(bad)} of {len(self.nodes)} nodes unsupported ({shown})"


@dataclasses.dataclass
class Availability:
    """Whether this machine can build artifacts for the backend, and run them; ``reason`` in plain words."""

    can_compile: bool
    can_run: bool
    reason: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CompileOptions:
    threads: int = 1
    optimization: str = "all"
    """Backend graph optimization level: disable | basic | extended | all."""
    shapes: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]] | None = None
    """Per dynamic input (min, opt, max) shapes for engines that need optimization profiles."""
    samples: Sequence[Mapping[str, np.ndarray]] | None = None
    """Sample inputs; their shapes set profiles when ``shapes`` is not given."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Artifact:
    """A compiled model: what to run (``handle``), where it was written (``path``), and how it was built."""

    backend: str
    handle: Any
    path: Path | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class BenchResult:
    backend: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Backend(abc.ABC):
    name: ClassVar[str]
    extra: ClassVar[str | None] = None
    """The ``pip install 'onnxpress[EXTRA]'`` that provides the runtime, for error hints."""

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> Availability:
        """Can artifacts be built and run on this machine? Never raises."""

    @abc.abstractmethod
    def capability(self, model: ir.Model) -> Capability: ...

    def legalize(self) -> list[Pass]:
        """Passes that must run before ``compile`` (IR-version caps, op mappings, Q/DQ placement)."""
        return []

    @abc.abstractmethod
    def compile(self, model: ir.Model, options: CompileOptions, output: Path | None = None) -> Artifact: ...

    @abc.abstractmethod
    def run(self, artifact: Artifact, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def bench(self, artifact: Artifact, inputs: Mapping[str, np.ndarray], runs: int = 30, warmup: int = 5, budget_s: float = 10.0) -> BenchResult:
        """Latency distribution over repeated runs on the same inputs (stops early past ``budget_s``)."""
        for _ in range(warmup):
            self.run(artifact, inputs)
        times = []
        start = time.perf_counter()
        for _ in range(runs):
            t0 = time.perf_counter()
            self.run(artifact, inputs)
            times.append((time.perf_counter() - t0) * 1e3)
            if time.perf_counter() - start > budget_s and len(times) >= 5:
                break
        q = np.percentile(times, [10, 90])
        return BenchResult(self.name, statistics.median(times), float(q[0]), float(q[1]), len(times), int(artifact.metadata.get("threads", 0)))

    def require(self) -> None:
        """Raise a one-line error naming the extra to install when the runtime is missing."""
        status = self.availability()
        if not status.can_compile:
            hint = f"pip install 'onnxpress[{self.extra}]'" if self.extra else None
            raise BackendUnavailableError(f"backend '{self.name}' cannot be used here: {status.reason}", hint=hint)


def get_backend(name: str) -> Backend:
    """Instantiate a registered backend by name."""
    from onnxpress.irpasses.core.errors import PipelineError
    from onnxpress.irpasses.core.registry import default_registry

    registry = default_registry()
    try:
        cls = registry.get("backends", name)
    except PipelineError as err:
        raise BackendUnavailableError(
            f"no backend named '{name}' is installed (installed: {', '.join(registry.names('backends')) or 'none'})",
            hint="a backend comes from onnxpress itself or from a plug-in package registering an 'onnxpress.backends' entry point",
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendUnavailableError(f"backend '{name}' from '{registry.origin('backends', name)}' is not an onnxpress Backend")
    return cls()


def sample_shapes(samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """(min, opt, max) per input over samples: elementwise min and max, the first sample as opt."""
    shapes: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for sample in samples:
        for name, array in sample.items():
            dims = list(np.shape(array))
            if name not in shapes:
                shapes[name] = (dims, dims, dims)
            else:
                lo, opt, hi = shapes[name]
                shapes[name] = ([min(a, b) for a, b in zip(lo, dims)], opt, [max(a, b) for a, b in zip(hi, dims)])
    return shapes


def cache_dir() -> Path:
    """Per-user cache (exported models, TensorRT timing caches): ``$ONNXPRESS_CACHE`` or ~/.cache/onnxpress."""
    import os

    path = Path(os.environ.get("ONNXPRESS_CACHE", Path.home() / ".cache" / "onnxpress"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write to a temporary file beside ``path`` and rename it over: readers never see a partial file."""
    from onnxpress.frontends.onnx_file import atomic_path

    target = Path(path)
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)
    return target


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    import json

    write_atomic(path, json.dumps(payload, indent=2, default=str))


def compile_model(model: ir.Model, backend: Backend, options: CompileOptions, output: Path | None = None) -> Artifact:
    """Run the backend's legalization passes (verified like any pipeline; the first sample, when given, sets
    the row counts legalize-kernels times layers at), then compile. What legalization decided per layer (which
    layers run our kernels, with the timings that chose them) goes to ``artifact.metadata["kernels"]``."""
    from onnxpress.irpasses.core.context import PassContext
    from onnxpress.irpasses.core.manager import PassManager

    backend.require()
    passes = backend.legalize()
    ctx = PassContext(samples=list(options.samples)[:1] if options.samples else None)
    if passes:
        PassManager(passes, ctx=ctx, run_checker=False).run(model)
    artifact = backend.compile(model, options, output)
    if ctx.extra.get("kernels"):
        artifact.metadata["kernels"] = ctx.extra["kernels"]
    return artifact


def parse_shapes(specs: Sequence[str]) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """``name:1x3x32x32`` (fixed) or ``name:MIN,OPT,MAX`` with each shape written ``1x64``."""
    from onnxpress.irpasses.core.errors import DataError

    shapes = {}
    for spec in specs:
        name, sep, rest = spec.rpartition(":")
        try:
            parts = [[int(d) for d in s.split("x")] for s in rest.split(",")]
        except ValueError as err:
            raise DataError(f"bad --shapes '{spec}': expected NAME:1x3x224x224 or NAME:MIN,OPT,MAX") from err
        if not sep or len(parts) not in (1, 3) or len({len(p) for p in parts}) != 1:
            raise DataError(f"bad --shapes '{spec}': expected NAME:1x3x224x224 or NAME:MIN,OPT,MAX")
        lo, opt, hi = parts * 3 if len(parts) == 1 else parts
        shapes[name] = (lo, opt, hi)
    return shapes
