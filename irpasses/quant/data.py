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


class _FirstOf:
    """Re-iterable view of the first ``count`` samples of a re-iterable source."""

    def __init__(self, source: Any, count: int) -> None:
        self.source, self.count = source, count

    def __iter__(self):
        import itertools

        return itertools.islice(iter(self.source), self.count)

    def __len__(self) -> int:
        return self.count


def fit_and_judge(samples: Any, judge: int) -> tuple[Any, list[dict], bool]:
    """(samples to fit statistics on, samples to judge fidelity on, whether the two are disjoint). Disjoint
    when there are at least twice ``judge`` samples: the last ``judge`` judge, the rest fit. A search judged on
    the samples GPTQ was fitted to believed its result: on MiniLM 4-bit, cosine 0.998 on those sentences,
    0.990 on held-out ones."""
    try:
        total = len(samples)
    except TypeError:
        total = None
    if total is not None and total >= 2 * judge:
        import itertools

        judged = [dict(s) for s in itertools.islice(iter(samples), total - judge, total)]
        return _FirstOf(samples, total - judge), judged, True
    judged = []
    for sample in samples:
        judged.append(dict(sample))
        if len(judged) >= judge:
            break
    return samples, judged, False
