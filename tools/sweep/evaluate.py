"""One sweep candidate, start to end, in whatever process runs it: transform, save, judge on the eval data.

The same function runs in a local worker process (``tools.sweep.worker``) and in a Ray task, so the two give the
same bytes. It returns an ``Outcome`` whose ``result`` holds only what the recipe and the data decide (size,
fidelity, status): equal on every run. Timings and memory go to ``measure`` and the pass report, which differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import resource
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ONNXPRESS_ORT_THREADS": "1"}
"""Each candidate keeps to one core, in a serial run as in a parallel one: the same thread count gives the same
floating-point sums, so results match byte for byte whatever the number of workers."""

Sample = Mapping[str, np.ndarray]


@dataclasses.dataclass
class Task:
    candidate: dict[str, Any]
    """``Candidate.to_dict()``: id, label, recipe, settings."""
    seed: int = 0
    target: str | None = None
    """The backend the passes may emit for (``opt --target``)."""
    cpu: str = "portable"
    """The deployment CPU for onnxruntime's integer kernels (``opt --cpu``)."""
    max_ir_version: int | None = 13
    rtol: float = 1e-3
    atol: float = 1e-5
    metric: str = "cosine"
    """``tools.sweep.metrics``: what the score (the front's fidelity axis) is."""


@dataclasses.dataclass
class Outcome:
    result: dict[str, Any]
    report: dict[str, Any] | None = None
    measure: dict[str, Any] | None = None
    model: bytes | None = None


def fidelity(reference: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]], rtol: float, atol: float,
             metric: str = "cosine") -> dict[str, Any]:
    """Worst case over the eval samples, per output, the lowest cosine of any output, and the score the front
    ranks by (that cosine, or the chosen metric)."""
    from onnxpress.irpasses.core.compare import compare_outputs, merge
    from onnxpress.tools.sweep.metrics import resolve

    worst = None
    for ref, got in zip(reference, outputs, strict=True):
        worst = merge(worst, compare_outputs(ref, got, rtol, atol))
    per_output = [e.to_dict() for e in worst or []]
    cosines = [e["cosine"] for e in per_output if not np.isnan(e["cosine"])]
    min_cosine = min(cosines) if len(cosines) == len(per_output) and cosines else 0.0
    scorer = resolve(metric)
    return {
        "metric": metric,
        "score": min_cosine if scorer is None else float(scorer(reference, outputs)),
        "min_cosine": min_cosine,
        "max_abs": max((e["max_abs"] for e in per_output), default=0.0),
        "samples": len(reference),
        "per_output": per_output,
    }


def run_outputs(model: bytes | str | Path, samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """The model's outputs on onnxruntime as it will run (all graph optimizations), one thread."""
    from onnxpress.backends.ort.runner import make_session, run_session

    session = make_session(model, optimization="all", threads=1)
    return [run_session(session, s) for s in samples]


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def run_candidate(task: Task, model: bytes | str | Path, calib: Any, eval_samples: Sequence[Sample],
                  reference: Sequence[Mapping[str, Any]]) -> Outcome:
    """Transform the model with the candidate's recipe and judge it; a user error becomes a ``failed`` result
    (it would fail the same way again), never an exception."""
    import onnxpress
    from onnxpress.irpasses.core.errors import OnnxpressError
    from onnxpress.tools.model_summary import summarize

    base = {k: task.candidate[k] for k in ("id", "label", "recipe", "settings")}
    _seed(task.seed)
    start = time.perf_counter()
    try:
        loaded = onnxpress.load(model)
        before = summarize(loaded)
        out, report = onnxpress.optimize(loaded, task.candidate["recipe"], samples=calib, target=task.target, cpu=task.cpu, verify="off",
                                         seed=task.seed, in_place=True)
        transform_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory(prefix="onnxpress-sweep-") as folder:
            path = Path(folder) / "model.onnx"
            onnxpress.save(out, path, max_ir_version=task.max_ir_version, external=False)
            data = path.read_bytes()
        after = summarize(out)
        judged = time.perf_counter()
        quality = fidelity(reference, run_outputs(data, eval_samples), task.rtol, task.atol, task.metric)
    except OnnxpressError as err:
        return Outcome({**base, "status": "failed", "error": err.message, "hint": err.hint or ""},
                       measure={"transform_s": time.perf_counter() - start})
    except Exception as err:  # an onnxpress bug: recorded for this candidate, the others go on
        return Outcome({**base, "status": "failed", "error": f"internal error: {type(err).__name__}: {err}", "hint": "please report it"},
                       measure={"transform_s": time.perf_counter() - start})
    result = {
        **base,
        "status": "ok",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "nodes": after["nodes"],
        "params": after["params"],
        "weight_bytes": after["weight_bytes"],
        "needs": after["needs"],
        "fidelity": quality,
    }
    measure = {
        "transform_s": transform_s,
        "fidelity_s": time.perf_counter() - judged,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "pid": os.getpid(),
    }
    payload = {"input": task.candidate["label"], "output": "model.onnx", "before": before, "after": after, "report": report.to_dict()}
    return Outcome(result, payload, measure, data)
