"""Run calibration samples through onnxruntime and stream intermediate activations into histograms.

Nothing is kept per sample: each run's activations update the histograms and are dropped. When one sample's
activations would exceed ``byte_budget``, the tensors are split into chunks that each fit, and the samples
are run once per chunk, so peak memory is bounded by the budget, not by the model or the sample count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.errors import DataError
from onnxpress.irpasses.core.progress import progress
from onnxpress.irpasses.quant.histogram import DEFAULT_BINS, TensorHistogram
from onnxpress.irpasses.quant.malloc import return_large_blocks, trim

QUANTIZABLE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
DEFAULT_BYTE_BUDGET = 64 * 2**20


def activation_tensors(model: ir.Model, ops: frozenset[str] = QUANTIZABLE_OPS) -> list[str]:
    """Float activations read or written by quantizable ops (weights and other constants excluded)."""
    names: dict[str, None] = {}
    for node in model.graph:
        if node.op_type not in ops:
            continue
        for value in [*node.inputs, *node.outputs]:
            if value is None or value.const_value is not None or not value.name:
                continue
            if value.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, None):
                names[value.name] = None
    return list(names)


def _session(model: ir.Model, outputs: Sequence[str]) -> Any:
    from onnxpress.backends.ort.runner import make_session
    from onnxpress.irpasses.core.numerics import with_outputs

    return make_session(with_outputs(model, list(outputs)), optimization="disable", low_memory=True)


class Accumulator(Protocol):
    """Streaming statistic of one tensor: fed each sample's array, keeps only its summary."""

    def update(self, values: np.ndarray) -> None: ...


def collect_histograms(
    model: ir.Model,
    samples: Iterable[Mapping[str, np.ndarray]],
    tensors: Sequence[str] | None = None,
    bins: int = DEFAULT_BINS,
    byte_budget: int = DEFAULT_BYTE_BUDGET,
    show_progress: bool | None = None,
    channel_axes: Mapping[str, int] | None = None,
) -> dict[str, TensorHistogram]:
    """Histograms of every tensor in ``tensors`` (default: activations of quantizable ops) over ``samples``."""
    names = list(tensors) if tensors is not None else activation_tensors(model)
    axes = channel_axes or {}
    return stream_statistics(
        model, samples, {n: TensorHistogram(bins=bins, channel_axis=axes.get(n)) for n in names}, byte_budget, show_progress
    )


Stats = TypeVar("Stats", bound=Accumulator)


def stream_statistics(
    model: ir.Model,
    samples: Iterable[Mapping[str, np.ndarray]],
    accumulators: dict[str, Stats],
    byte_budget: int = DEFAULT_BYTE_BUDGET,
    show_progress: bool | None = None,
    description: str = "calibrating",
) -> dict[str, Stats]:
    """Feed every sample's value of each named tensor to its accumulator, under ``byte_budget`` of exposed
    activations per run (tensors are split into chunks that fit, and the samples run once per chunk)."""
    if not accumulators:
        return accumulators
    return_large_blocks()
    source = samples  # re-iterable: read once per chunk, never held all at once
    first = next(iter(source), None)
    if first is None:
        raise DataError("calibration data is empty: no sample to run")
    try:
        count: int | None = len(source)  # type: ignore[arg-type]
    except TypeError:  # a generator-backed source has no length; the progress bar just counts up
        count = None
    graph_inputs = [v.name for v in model.graph.inputs if v.name in accumulators]
    for sample in source:  # model inputs come straight from the data
        for name in graph_inputs:
            accumulators[name].update(np.asarray(sample[name]))
    computed = [n for n in accumulators if n not in graph_inputs]
    chunks = _plan_chunks(model, computed, first, byte_budget) if computed else []
    del first
    with progress(description, len(chunks) * count if count else None, show_progress) as bar:
        for chunk in chunks:
            session = _session(model, chunk)
            wanted = [o.name for o in session.get_outputs() if o.name in accumulators]
            for sample in source:
                feed = {i.name: np.asarray(sample[i.name]) for i in session.get_inputs()}
                for name, array in zip(wanted, session.run(wanted, feed)):
                    accumulators[name].update(array)
                bar.advance()
            del session
            trim()
    return accumulators


def _plan_chunks(model: ir.Model, names: list[str], sample: Mapping[str, np.ndarray], byte_budget: int) -> list[list[str]]:
    """Measure each tensor's size on one sample (a few tensors at a time), then pack tensors under the budget."""
    sizes: dict[str, int] = {}
    probe = 8
    for start in range(0, len(names), probe):
        part = names[start : start + probe]
        session = _session(model, part)
        feed = {i.name: np.asarray(sample[i.name]) for i in session.get_inputs()}
        wanted = [o.name for o in session.get_outputs() if o.name in part]
        for name, array in zip(wanted, session.run(wanted, feed)):
            sizes[name] = int(np.asarray(array).nbytes)
        del session
        trim()
    chunks: list[list[str]] = [[]]
    used = 0
    for name in names:
        size = sizes.get(name, 0)
        if chunks[-1] and used + size > byte_budget:
            chunks.append([])
            used = 0
        chunks[-1].append(name)
        used += size
    return chunks
