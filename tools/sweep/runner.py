"""``onnxpress sweep``: run every candidate recipe on a model, measure size, fidelity and latency, keep the
Pareto front. Everything the user can get wrong (pipelines, grid, data, the directory, the Ray address) is
checked before the first candidate starts; a rerun on the same directory runs only what is missing.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from onnxpress.irpasses.core.errors import DataError
from onnxpress.irpasses.core.manager import format_bytes
from onnxpress.tools.pareto import front
from onnxpress.tools.sweep import latency
from onnxpress.tools.sweep.candidates import LAYER_OPS, Candidate, expand, per_layer
from onnxpress.tools.sweep.evaluate import Task, run_outputs
from onnxpress.tools.sweep.executors import LocalPool, RayPool, model_path_for_ray
from onnxpress.tools.sweep.store import SweepDir, dumps, file_digest
from onnxpress.tools.sweep.worker import load_reference, read_samples, save_reference


@dataclasses.dataclass
class SweepSettings:
    model: Path
    calib: Path
    out: Path
    pipelines: str
    eval: Path | None = None
    grid: list[str] | None = None
    per_layer: bool = False
    """Score layers: the one pipeline, then once per Conv/MatMul/Gemm layer with that layer kept out of it."""
    workers: int | None = None
    ray: str | None = None
    timeout_s: float = 3600.0
    backend: str = "ort"
    threads: int = 1
    runs: int = 20
    latency: bool = True
    seed: int = 0
    target: str | None = None
    cpu: str = "portable"
    """The deployment CPU for onnxruntime's integer kernels (``opt --cpu``)."""
    metric: str = "cosine"
    report: bool = True


@dataclasses.dataclass
class SweepOutcome:
    results: dict[str, Any]
    """What ``results.json`` holds: equal bytes for equal inputs, however the sweep was run."""
    measurements: dict[str, dict[str, Any]]
    """Per candidate id: latency and transform time (measured, so they differ between runs)."""
    ran: list[str]
    """Ids of the candidates run this time (the others were done before)."""
    failures: dict[str, str]
    """Candidates that crashed or timed out this time, and why (they run again on the next rerun)."""
    seconds: float


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _identity(settings: SweepSettings) -> dict[str, Any]:
    for label, path in (("model", settings.model), ("--calib", settings.calib), ("--eval", settings.eval)):
        if path is not None and not Path(path).exists():
            raise DataError(f"{label} {path}: no such file or folder")
    return {
        "model": Path(settings.model).name,
        "model_sha256": file_digest(settings.model),
        "calib_sha256": file_digest(settings.calib),
        "eval_sha256": file_digest(settings.eval or settings.calib),
        "seed": settings.seed,
        "target": settings.target,
        "cpu": settings.cpu,
        "metric": settings.metric,
    }


def _summary_line(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"{result['label']}: {result.get('status')}: {result.get('error', '')}"
    quality = result["fidelity"]
    return f"{result['label']}: {format_bytes(result['bytes'])}, {quality['metric']} {quality['score']:.5f}"


def run_sweep(settings: SweepSettings) -> SweepOutcome:
    start = time.perf_counter()
    import onnxpress
    from onnxpress.frontends.sample_data import check_sample
    from onnxpress.tools.sweep.metrics import resolve

    if settings.per_layer and settings.grid:
        raise DataError("--per-layer and --grid do not combine: score the layers of one recipe at a time")
    if not settings.per_layer:
        candidates = expand(settings.pipelines, settings.grid)  # bad pipelines fail before the model is read
    resolve(settings.metric)  # an unknown metric likewise
    identity = _identity(settings)
    eval_path = settings.eval or settings.calib
    model = onnxpress.load(settings.model)  # a model or eval data onnxpress refuses fails here, once, named
    eval_samples = read_samples(str(eval_path))
    for i, sample in enumerate(eval_samples):
        check_sample(sample, model, i)
    if settings.per_layer:
        candidates = per_layer(settings.pipelines, [n.name for n in model.graph if n.op_type in LAYER_OPS and n.name])
    del model
    store = SweepDir(settings.out, identity)
    workers = settings.workers if settings.workers is not None else (None if settings.ray else 1)
    executor: LocalPool | RayPool
    if settings.ray:
        executor = RayPool(settings.ray, workers, settings.timeout_s, store)
    else:
        executor = LocalPool(workers or 1, settings.timeout_s, store, str(settings.model), str(settings.calib), str(eval_path))
    store.check()  # a directory holding another model's sweep is refused here, before any work
    executor.connect()  # an unreachable Ray cluster likewise
    store.open()
    try:
        reference_path = store.root / "reference.npz"
        if reference_path.exists():
            reference = load_reference(reference_path, len(eval_samples))
        else:
            reference = run_outputs(str(settings.model), eval_samples)
            save_reference(reference_path, reference)
        _baseline(store, settings, eval_samples)
        todo = [c for c in candidates if store.read(c.id, "result.json") is None]
        _log(f"sweep: {len(candidates)} candidates, {len(candidates) - len(todo)} done before; running {len(todo)} "
             f"on {executor.workers} worker(s) ({executor.kind}), one thread each")
        phase = time.perf_counter()
        failures = _run(executor, todo, settings, eval_samples, reference)
        candidates_s = time.perf_counter() - phase
    finally:
        if isinstance(executor, RayPool):
            executor.close()
    phase = time.perf_counter()
    measurements = _latency_phase(store, candidates, settings, eval_samples) if settings.latency else _measurements(store, candidates)
    timing = {"workers": executor.workers, "executor": executor.kind, "ran": len(todo), "threads": settings.threads,
              "phases": {"candidates_s": candidates_s, "latency_s": time.perf_counter() - phase}}
    results = _assemble(store, candidates, identity, failures)
    from onnxpress.backends.base import write_atomic

    write_atomic(store.root / "results.json", dumps(results))
    write_atomic(store.root / "measurements.json", dumps(measurements))
    write_atomic(store.root / "timing.json", dumps(timing))  # this run's phases: what tools/bench sweep compares
    if settings.report:
        from onnxpress.tools.report_html import sweep_page

        write_atomic(store.root / "report.html", sweep_page(store.root, results, measurements,
                                                           latency.describe(settings.backend, settings.threads, settings.runs)))
    return SweepOutcome(results, measurements, [c.id for c in todo], failures, time.perf_counter() - start)


def _run(executor: LocalPool | RayPool, todo: list[Candidate], settings: SweepSettings, eval_samples: list[Any],
         reference: list[Any]) -> dict[str, str]:
    from onnxpress.irpasses.core.progress import progress

    failures: dict[str, str] = {}
    if not todo:
        return failures
    tasks = [Task(c.to_dict(), seed=settings.seed, target=settings.target, cpu=settings.cpu, metric=settings.metric,
                  max_ir_version=13 if settings.backend == "ort" else None) for c in sorted(todo, key=_expected_cost, reverse=True)]
    labels = {c.id: c.label for c in todo}
    if isinstance(executor, RayPool):
        executor.put(model_path_for_ray(Path(settings.model)), read_samples(str(settings.calib)), eval_samples, reference)
    finished = 0
    with progress("sweep", len(todo)) as bar:
        def on_done(cid: str, failure: str | None) -> None:
            nonlocal finished
            finished += 1
            bar.advance()
            if failure:
                failures[cid] = failure
                _log(f"[{finished}/{len(todo)}] {labels[cid]}: {failure}")
            else:
                result = executor.store.read(cid, "result.json") or {"label": labels[cid], "status": "missing"}
                _log(f"[{finished}/{len(todo)}] {_summary_line(result)}")

        executor.run(tasks, on_done)
    return failures


SEARCHING = ("auto-quant", "fidelity=", "allocate=true", "method=sparsegpt", "method=auto")


def _expected_cost(candidate: Candidate) -> int:
    """Candidates that search (a fidelity target, per-layer allocation) take many times longer than one-shot
    recipes: starting them first keeps the last worker from finishing long after the others (longest first).
    Only the order of work changes, never a result."""
    return sum(candidate.recipe.count(word) for word in SEARCHING)


def _baseline(store: SweepDir, settings: SweepSettings, eval_samples: list[Any]) -> None:
    """The original model's own size, as the first point of every plot (fidelity 1 by definition)."""
    if store.read("original", "result.json") is None:
        store.write("original", "result.json", {"id": "original", "label": "original", "recipe": "", "settings": {},
                                                "status": "ok", "bytes": Path(settings.model).stat().st_size,
                                                "fidelity": {"metric": settings.metric, "score": 1.0, "min_cosine": 1.0, "max_abs": 0.0,
                                                             "samples": len(eval_samples),
                                                             "per_output": []}})


def _measurements(store: SweepDir, candidates: list[Candidate]) -> dict[str, dict[str, Any]]:
    ids = ["original"] + [c.id for c in candidates]
    return {cid: m for cid in ids if (m := store.read(cid, "measure.json")) is not None}


def _latency_phase(store: SweepDir, candidates: list[Candidate], settings: SweepSettings,
                   eval_samples: list[Any]) -> dict[str, dict[str, Any]]:
    """After every transform: the finished candidates not yet measured, interleaved with the original."""
    todo = [c for c in candidates if (r := store.read(c.id, "result.json")) and r.get("status") == "ok"
            and "latency" not in (store.read(c.id, "measure.json") or {}) and store.model_path(c.id).exists()]
    if todo:
        _log(f"sweep: measuring latency of {len(todo)} model(s) and the original, interleaved ({settings.backend}, "
             f"{settings.threads} thread(s))")
        paths = {"original": settings.model, **{c.id: store.model_path(c.id) for c in todo}}
        got = latency.measure_interleaved(paths, eval_samples[0], settings.backend, settings.threads, settings.runs)
        baseline = got["original"]
        store.write("original", "measure.json", {"latency": baseline})
        for c in todo:
            entry = got[c.id]
            if "median_ms" in entry and "median_ms" in baseline:
                entry["vs_original"] = entry["median_ms"] / baseline["median_ms"]
            store.write(c.id, "measure.json", {**(store.read(c.id, "measure.json") or {}), "latency": entry})
    return _measurements(store, candidates)


def _assemble(store: SweepDir, candidates: list[Candidate], identity: dict[str, Any], failures: dict[str, str]) -> dict[str, Any]:
    rows = []
    for c in candidates:
        stored = store.read(c.id, "result.json")
        rows.append(stored if stored is not None else {**c.to_dict(), "status": "unfinished", "error": failures.get(c.id, "not run")})
    ok = [r for r in rows if r.get("status") == "ok"]
    original = store.read("original", "result.json")
    pareto = front([original, *ok] if original else ok, [(lambda r: r["bytes"], False), (lambda r: r["fidelity"]["score"], True)])
    results = {
        "format": "onnxpress-sweep-results/1",
        "sweep": identity,
        "original": original,
        "candidates": rows,
        "pareto_size_fidelity": [r["id"] for r in pareto],
    }
    if any(dict(c.settings).get("keep") for c in candidates):
        results["per_layer"] = layer_scores(rows)
    return results


def layer_scores(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per layer, in graph order: the fidelity with that layer kept out, and how much it recovers over the whole
    pipeline (the layer's share of the damage; larger = more sensitive)."""
    whole = rows[0]
    base = whole["fidelity"]["score"] if whole.get("status") == "ok" else None
    scores = []
    for r in rows[1:]:
        layer = (r.get("settings") or {}).get("keep")
        fid = r["fidelity"]["score"] if r.get("status") == "ok" else None
        scores.append({"layer": layer, "id": r["id"], "score": fid,
                       "recovered": None if fid is None or base is None else fid - base})
    return scores
