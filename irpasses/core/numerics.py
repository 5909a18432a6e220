"""Numeric check of rewrites against the original model, run with onnxruntime on sample inputs.

At the end of a pipeline by default, after every changed pass with ``each=True``. It attributes error to
passes ("pass X moved max error from a to b") and, on failure, names the first node whose output diverges.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.compare import (
    OutputError,
    compare_arrays,
    compare_outputs,
    merge,
)
from onnxpress.irpasses.core.errors import BackendUnavailableError, NumericMismatchError
from onnxpress.irpasses.core.instrument import PassInstrument
from onnxpress.irpasses.core.snapshot import snapshot

if TYPE_CHECKING:
    from onnxpress.irpasses.core.manager import PassRecord, PipelineReport
    from onnxpress.irpasses.core.pass_base import Pass

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-4
"""Float rewrites reassociate arithmetic; a deep CNN amplifies that rounding. onnxruntime's own graph
optimizations move PP-OCRv4 det's probability map by up to 8e-5, so a tighter default would reject exact
rewrites as often as it catches wrong ones (a wrong rewrite moves outputs by orders of magnitude more)."""
DEFAULT_MIN_COSINE = 0.99
"""For pipelines with a lossy pass (quantization, low rank, pruning): each output's cosine similarity to the
original must reach this; rtol/atol cannot judge an intended approximation."""


def run_model(model: ir.Model, samples: Iterable[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    from onnxpress.backends.ort.runner import make_session, run_session

    session = make_session(model)
    return [run_session(session, s) for s in samples]


def worst(errors: list[OutputError]) -> OutputError | None:
    return max(errors, key=lambda e: (not e.within, e.max_abs), default=None)


def with_outputs(model: ir.Model, names: list[str]) -> ir.Model:
    """A cheap clone (tensors shared) whose graph also outputs the named intermediate values."""
    clone = snapshot(model)
    existing = {v.name for v in clone.graph.outputs}
    by_name = {v.name: v for node in clone.graph for v in node.outputs}
    clone.graph.outputs.extend(by_name[n] for n in names if n in by_name and n not in existing)
    return clone


def locate_divergence(
    original: ir.Model, model: ir.Model, sample: Mapping[str, np.ndarray], rtol: float, atol: float
) -> str | None:
    """Name the first node (in the rewritten graph's order) whose output exists in both models and differs."""
    from onnxpress.backends.ort.runner import make_session, run_session

    original_names = {v.name for node in original.graph for v in node.outputs if v.name}
    candidates = [(node, v) for node in model.graph for v in node.outputs if v.name in original_names]
    if not candidates:
        return None
    wanted = [v.name for _, v in candidates]
    try:
        ref = run_session(make_session(with_outputs(original, wanted)), sample)
        got = run_session(make_session(with_outputs(model, wanted)), sample)
    except BackendUnavailableError:
        return None
    for node, value in candidates:
        if value.name in ref and value.name in got:
            err = compare_arrays(value.name, ref[value.name], got[value.name], rtol, atol)
            if not err.within:
                return f"{node.op_type} node '{node.name}' (output '{value.name}': max abs error {err.max_abs:.3g})"
    return None


@dataclasses.dataclass
class NumericsCheck(PassInstrument):
    """Compare the model's outputs with the original's on fixed samples."""

    samples: list[dict[str, np.ndarray]]
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    each: bool = False
    strict: bool = True
    """False: a model ORT cannot run is reported as unchecked instead of failing."""
    samples_are_random: bool = False
    min_cosine: float | None = None
    """Judge outputs by cosine similarity instead of rtol/atol; set automatically when a pass is lossy."""
    final: list[OutputError] | None = None
    skipped_reason: str | None = None
    _original: ir.Model | None = None
    _reference: list[dict[str, np.ndarray]] | None = None
    _last_max: float = 0.0

    def before_pipeline(self, model: ir.Model, passes: list[Pass]) -> None:
        if self.min_cosine is None and any(getattr(p, "lossy", False) for p in passes):
            self.min_cosine = DEFAULT_MIN_COSINE
        self._original = snapshot(model)
        try:
            self._reference = run_model(self._original, self.samples)
        except BackendUnavailableError as err:
            if self.strict:
                raise BackendUnavailableError(f"cannot run the input model for the numeric check: {err.message}") from err
            self.skipped_reason = f"input model does not run on onnxruntime here ({err.message})"
            warnings.warn(f"numeric check skipped: {self.skipped_reason}", stacklevel=2)

    def _check(self, model: ir.Model, pass_name: str | None) -> list[OutputError]:
        assert self._reference is not None
        try:
            got = run_model(model, self.samples)
        except BackendUnavailableError as err:
            where = f"after pass '{pass_name}'" if pass_name else "after the pipeline"
            raise NumericMismatchError(f"the model no longer runs on onnxruntime {where}: {err.message}", pass_name=pass_name) from err
        errors: list[OutputError] | None = None
        failing_sample = None
        for i, (ref, out) in enumerate(zip(self._reference, got)):
            errs = compare_outputs(ref, out, self.rtol, self.atol)
            if self.min_cosine is not None:
                errs = [dataclasses.replace(e, within=bool(e.cosine >= self.min_cosine)) for e in errs]
            if failing_sample is None and not all(e.within for e in errs):
                failing_sample = i
            errors = merge(errors, errs)
        errors = errors or []
        if failing_sample is not None:
            bad = worst(errors)
            assert bad is not None and self._original is not None
            where = f"pass '{pass_name}'" if pass_name else "the pipeline"
            node = None
            if self.min_cosine is None:  # in a lossy pipeline every node differs; the first says nothing
                node = locate_divergence(self._original, model, self.samples[failing_sample], self.rtol, self.atol)
            detail = f"; first diverging node: {node}" if node else ""
            hint = None if pass_name else "rerun with --verify-each (or --bisect) to find the pass"
            raise NumericMismatchError(
                f"{where} changed output '{bad.name}' beyond {self._criterion()}: "
                f"max abs error {bad.max_abs:.3g}, max rel error {bad.max_rel:.3g}, cosine {bad.cosine:.6f}"
                f"{' (' + bad.note + ')' if bad.note else ''}{detail}",
                pass_name=pass_name,
                hint=hint,
            )
        return errors

    def after_pass(self, pass_: Pass, model: ir.Model, record: PassRecord) -> None:
        if not self.each or not record.modified or self._reference is None:
            return
        errors = self._check(model, record.name)
        now = max((e.max_abs for e in errors), default=0.0)
        record.max_abs_error = now
        if now != self._last_max:
            record.notes.append(f"moved max abs error from {self._last_max:.3g} to {now:.3g}")
        self._last_max = now

    def after_pipeline(self, model: ir.Model, report: PipelineReport) -> None:
        if self._reference is None:
            report.numerics_note = f"not checked: {self.skipped_reason}"
            return
        self.final = self._check(model, None)
        report.numerics = self.final
        kind = "generated random inputs" if self.samples_are_random else "the given sample data"
        report.numerics_note = f"{len(self.samples)} sample(s) from {kind}, {self._criterion()}"

    def _criterion(self) -> str:
        if self.min_cosine is not None:
            return f"cosine >= {self.min_cosine:g} (lossy pipeline)"
        return f"rtol={self.rtol:g}, atol={self.atol:g}"
