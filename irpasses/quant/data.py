"""Calibration data for the quantization passes: the context's samples, validated against the model as they
are read (names, dtypes, ranks, dims), or random inputs for smoke tests only (with a warning)."""

from __future__ import annotations

import warnings
from typing import Any

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import DataError


def calibration_samples(ctx: PassContext, model: ir.Model, allow_random: bool, what: str) -> Any:
    """The context's samples, checked against the model's inputs; random inputs only when allowed (warns)."""
    from onnxpress.frontends.sample_data import random_inputs

    if ctx.samples is None:
        if not allow_random:
            raise DataError(
                f"pass '{what}' needs calibration data and none was given",
                hint="pass --calib DATA (.npz with one array per input, axis 0 = samples, or a folder of .npz); "
                f"'{what}{{allow_random=true}}' calibrates on random inputs for smoke tests only",
            )
        warnings.warn(f"pass '{what}' calibrates on generated random inputs: ranges will not fit real data", stacklevel=2)
        return random_inputs(model, count=4, seed=ctx.seed)
    from collections.abc import Mapping

    from onnxpress.frontends.sample_data import as_samples

    source = as_samples(ctx.samples) if isinstance(ctx.samples, (Mapping, str)) else ctx.samples
    return _Validated(source, model)


class _Validated:
    """Re-iterable view of samples that checks each one against the model (names, dtypes, ranks, dims)."""

    def __init__(self, source: Any, model: ir.Model) -> None:
        self.source, self.model = source, model

    def __iter__(self):
        from onnxpress.frontends.sample_data import validated

        return validated(self.source, self.model)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]
