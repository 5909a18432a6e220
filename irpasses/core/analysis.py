"""Cached analyses, dropped when a pass does not declare it keeps them (LLVM/MLIR rule)."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import onnx_ir as ir

if TYPE_CHECKING:
    from onnxpress.irpasses.core.context import PassContext

T = TypeVar("T")


class Analysis(abc.ABC, Generic[T]):
    """A pure function of the model whose result is worth caching between passes."""

    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def compute(cls, model: ir.Model, ctx: PassContext) -> T:
        """Compute the analysis result; must not modify the model."""


class AnalysisManager:
    """Holds analysis results for one model; ``invalidate`` keeps only what a pass preserved."""

    def __init__(self) -> None:
        self._results: dict[type[Analysis[Any]], Any] = {}
        self._model_id: int | None = None

    def get(self, analysis: type[Analysis[T]], model: ir.Model, ctx: PassContext) -> T:
        if self._model_id != id(model):
            self._results.clear()
            self._model_id = id(model)
        if analysis not in self._results:
            self._results[analysis] = analysis.compute(model, ctx)
        return self._results[analysis]

    def cached(self, analysis: type[Analysis[T]]) -> T | None:
        return self._results.get(analysis)

    def put(self, analysis: type[Analysis[T]], model: ir.Model, value: T) -> None:
        """Store a result computed elsewhere (e.g. calibration statistics gathered by a pass)."""
        if self._model_id != id(model):
            self._results.clear()
            self._model_id = id(model)
        self._results[analysis] = value

    def invalidate(self, keep: frozenset[Any] | None) -> list[str]:
        """Drop every result whose analysis is not in ``keep`` (None keeps all); returns the dropped names."""
        if keep is None:
            return []
        dropped = [a.name for a in self._results if a not in keep]
        self._results = {a: r for a, r in self._results.items() if a in keep}
        return dropped

    def names(self) -> list[str]:
        return [a.name for a in self._results]
