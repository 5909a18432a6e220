"""What a frontend is: the ``Frontend`` protocol, where a lowered model came from, and its import check.

A frontend hands a framework's model to that framework's own maintained ONNX converter (never one of ours)
and returns onnx-ir. Frontends register through the ``onnxpress.frontends`` entry point, built-ins exactly as
a vendor's would; ``frontends.loader`` picks one and stamps the provenance below on the model.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.errors import BackendUnavailableError, InvalidModelError, OnnxpressError

PROVENANCE_KEY = "onnxpress.frontend.provenance"
"""``model.meta`` key: the ``Provenance`` a frontend attaches; the loader copies it into metadata_props."""
CHECK_KEY = "onnxpress.frontend.import_check"
"""``model.meta`` key: the ``ImportCheck`` a frontend ran against its framework's own runtime."""

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


@runtime_checkable
class Frontend(Protocol):
    """One source framework. ``accepts`` must be cheap and import nothing heavy: it is asked of every source."""

    name: str
    extra: str
    """The pip extra that installs the framework and its converter: ``pip install 'onnxpress[<extra>]'``."""

    def accepts(self, source: object) -> bool: ...

    def lower(self, source: Any, **options: Any) -> ir.Model: ...


class UntrustedSourceError(OnnxpressError):
    """The source would run code when loaded (pickle, TorchScript archive) and was not marked trusted."""


def refuse_untrusted(path: object, kind: str) -> UntrustedSourceError:
    return UntrustedSourceError(
        f"'{path}' is a {kind}: loading it runs whatever code it holds, so it is refused without trust_source=True "
        "(API) or --trust-source (CLI)",
        hint="opt in only for a file from a source you trust; prefer a format that needs no trust (.skops)",
    )


def require(module: str, frontend: str, extra: str) -> ModuleType:
    """Import a framework or converter, or fail with one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise BackendUnavailableError(
            f"the {frontend} frontend needs '{module.split('.')[0]}', which is not installed: pip install 'onnxpress[{extra}]'"
        ) from err


def version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a lowered model came from; stamped into ``metadata_props`` so the saved file says so too."""

    framework: str
    framework_version: str
    converter: str
    converter_version: str
    model: str
    """What was lowered: a path, or the object's class name."""

    def props(self) -> dict[str, str]:
        return {f"onnxpress.source.{k}": str(v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output of the lowered model against the framework's own result on the same inputs."""

    name: str
    kind: str
    """``labels`` (decisions: exact agreement counts) or ``values`` (floats: error relative to scale)."""
    max_abs: float = 0.0
    scale: float = 1.0
    agreement: float = 1.0
    gated: bool = True
    """False for a figure reported but not judged (the values of an int8 model, judged by its decisions)."""

    @property
    def relative(self) -> float:
        return self.max_abs / self.scale if self.scale > 0 else self.max_abs

    def text(self) -> str:
        note = "" if self.gated else ", not judged"
        if self.kind == "labels":
            return f"{self.name}: {self.agreement:.2%} same labels{note}"
        return f"{self.name}: max abs error {self.max_abs:.3g} ({self.relative:.3g} of output scale {self.scale:.3g}{note})"


@dataclasses.dataclass
class ImportCheck:
    """The import check: lowered ONNX (onnxruntime) against the source framework's runtime."""

    reference: str
    """What the outputs were compared with, e.g. ``scikit-learn predict_proba``."""
    samples: int
    generated: bool
    """True when no samples were given and random inputs were used (a weaker check; the report says so)."""
    outputs: list[OutputCheck]
    seconds: float = 0.0
    """Time to convert and load (the import time), without the check itself."""
    rtol: float = 1e-4
    min_agreement: float = 0.99

    @property
    def passed(self) -> bool:
        return all(o.agreement >= self.min_agreement if o.kind == "labels" else o.relative <= self.rtol
                   for o in self.outputs if o.gated)

    def summary(self) -> str:
        inputs = f"{self.samples} generated random samples" if self.generated else f"{self.samples} given samples"
        if not any(o.gated for o in self.outputs):
            verdict = "reported, nothing judged"
        else:
            verdict = "matches" if self.passed else "DOES NOT match"
        return f"import check vs {self.reference} on {inputs}: {verdict}; " + "; ".join(o.text() for o in self.outputs)

    def raise_if_failed(self, what: str, converter: str) -> None:
        if not self.passed:
            raise InvalidModelError(
                f"{what} converted by {converter} {self.summary()} (limits: {self.rtol:g} of scale, {self.min_agreement:.0%} labels)",
                hint="the converter may not support an option of this model; check=False keeps the model anyway",
            )


def compare_values(name: str, reference: object, got: object) -> OutputCheck:
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(got, dtype=np.float64)
    if out.size != ref.size:
        return OutputCheck(name, "values", float("inf"), 1.0)
    ref, out = ref.reshape(-1), out.reshape(-1)
    scale = float(np.max(np.abs(ref))) if ref.size else 1.0
    return OutputCheck(name, "values", float(np.max(np.abs(ref - out), initial=0.0)), scale if scale > 0 else 1.0)


def compare_argmax(name: str, reference: object, got: object, tie: float = 0.0) -> OutputCheck:
    """Decisions of a classifier-like output: the argmax over its last axis (int8 models are judged so). With
    ``tie`` (an int8 output's resolution, one step), a choice whose reference value is within ``tie`` of the
    reference's top value counts as the same decision: values that close are a tie at that resolution."""
    ref, out = np.asarray(reference), np.asarray(got)
    if ref.shape != out.shape or ref.ndim == 0:
        return OutputCheck(f"{name} argmax", "labels", agreement=0.0)
    if tie <= 0:
        return compare_labels(f"{name} argmax", ref.argmax(-1), out.argmax(-1))
    wide = ref.astype(np.float64)
    chosen = np.take_along_axis(wide, out.argmax(-1)[..., None], -1)[..., 0]
    same = chosen >= wide.max(-1) - tie
    return OutputCheck(f"{name} argmax (ties within {tie:g})", "labels", agreement=float(np.mean(same)) if same.size else 1.0)


def ungated(check: OutputCheck) -> OutputCheck:
    """The same figure, reported but not judged."""
    return dataclasses.replace(check, gated=False)


def compare_labels(name: str, reference: object, got: object) -> OutputCheck:
    ref, out = np.asarray(reference).reshape(-1), np.asarray(got).reshape(-1)
    if ref.size != out.size:
        return OutputCheck(name, "labels", agreement=0.0)
    same = ref.astype(str) == out.astype(str) if ref.dtype.kind != out.dtype.kind else ref == out
    return OutputCheck(name, "labels", agreement=float(np.mean(same)) if ref.size else 1.0)


def lowered(proto: Any) -> ir.Model:
    """A converter's ModelProto through the ONNX frontend's own validation (the same checks a file gets)."""
    from onnxpress.frontends.onnx_file import load

    return load(proto)


def option_text(options: dict[str, Any]) -> str:
    """Options as short text for metadata: arrays by shape and dtype, never by content."""

    def short(value: Any) -> str:
        if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy arrays, torch tensors
            return f"{type(value).__name__}{list(value.shape)}:{value.dtype}"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {short(v)}" for k, v in value.items()) + "}"
        if isinstance(value, Sequence) and not isinstance(value, str):
            return "[" + ", ".join(short(v) for v in value) + "]"
        return repr(value)[:200]

    return ", ".join(f"{k}={short(v)}" for k, v in sorted(options.items()))
