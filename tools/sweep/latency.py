"""Latency of sweep results, measured on the driver once no candidate is running, so no measurement shares the
machine with a transform. Models are timed interleaved (a few runs of each in turn, several rounds) together
with the original model, so a drift of the machine's speed during the phase moves all of them alike; every
candidate's ratio is against the original timed in the same rounds."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROUNDS = 5


def measure_interleaved(paths: Mapping[str, Path | str], sample: Mapping[str, np.ndarray], backend: str, threads: int,
                        runs: int) -> dict[str, dict[str, Any]]:
    """Per model id: median, p10 and p90 in ms on ``backend`` (graph optimizations on), or the error that kept it
    from running. ``runs`` per model in all, spread over ``ROUNDS`` rounds."""
    import onnxpress
    from onnxpress.backends.base import CompileOptions, compile_model, get_backend
    from onnxpress.irpasses.core.errors import OnnxpressError

    chosen = get_backend(backend)
    artifacts, results = {}, {}
    for key, path in paths.items():
        try:
            artifacts[key] = compile_model(onnxpress.load(path), chosen, CompileOptions(threads=threads, samples=[sample]))
            for _ in range(3):
                chosen.run(artifacts[key], sample)
        except OnnxpressError as err:
            results[key] = {"error": err.message}
    times: dict[str, list[float]] = {key: [] for key in artifacts}
    for _ in range(ROUNDS):
        for key, artifact in artifacts.items():
            for _ in range(max(1, math.ceil(runs / ROUNDS))):
                start = time.perf_counter()
                chosen.run(artifact, sample)
                times[key].append((time.perf_counter() - start) * 1e3)
    for key, got in times.items():
        p10, p90 = np.percentile(got, [10, 90])
        results[key] = {"backend": backend, "threads": threads, "median_ms": statistics.median(got), "p10_ms": float(p10),
                        "p90_ms": float(p90), "runs": len(got)}
    return results


def describe(backend: str, threads: int, runs: int) -> str:
    return (f"{backend}, {threads} thread(s), median of {runs} runs per model on the first eval sample, measured on the "
            f"driver after all transforms finished, the models interleaved over {ROUNDS} rounds with the original model")
