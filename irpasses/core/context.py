"""What passes need from outside the graph: analyses, sample/calibration data, the target, a seed."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from onnxpress.irpasses.core.analysis import AnalysisManager
from onnxpress.irpasses.core.progress import progress as _progress

Sample = Mapping[str, np.ndarray]
"""One model evaluation: input name -> array (batch included)."""


@dataclasses.dataclass
class PassContext:
    """Shared state handed to every pass run by one PassManager."""

    analyses: AnalysisManager = dataclasses.field(default_factory=AnalysisManager)
    samples: Iterable[Sample] | None = None
    """Re-iterable sample/calibration data (see onnxpress.frontends.sample_data)."""
    target: str | None = None
    """Name of the target backend; passes ask it what they may emit."""
    cpu: str = "portable"
    """The deployment CPU for onnxruntime's integer kernels: portable (any x86-64), native (this one), vnni or
    no-vnni (see irpasses.quant.cpu_target)."""
    seed: int = 0
    logger: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("onnxpress"))
    show_progress: bool | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def progress(self, description: str, total: int | None = None):
        return _progress(description, total, self.show_progress)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)
