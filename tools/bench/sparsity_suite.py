"""tools/bench sparsity: channel permutation against apex's published case, one-shot 2:4 fidelity of magnitude /
Wanda / SparseGPT with and without permutation on MiniLM and PP-OCRv4 det/rec, the fidelity search's share of
weights at 2:4, and end-to-end onnxruntime latency (1 thread, our SparseMatMul kernels where legalize-kernels
times them faster) of float, sparse-2of4, int8 and sparse-int8 on MiniLM.

Same calibration / held-out samples as ``tools/bench compress`` (``quant_suite._models``).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from typing import Any

import numpy as np

METHODS = ("magnitude", "wanda", "sparsegpt")
PERMUTE = "permute-channels{pattern=2:4},"
EXTRA_TARGETS = {"minilm": (0.998,), "det": (0.99,)}
"""Fidelity targets besides sparse-2of4's own 0.995, per model."""


def bench_sparsity(models: tuple[str, ...] = ("minilm", "det", "rec")) -> dict[str, Any]:
    from onnxpress.tools.bench.permutation_bench import bench_permutation

    out: dict[str, Any] = {"permutation": bench_permutation()}
    for name in models:
        out[name] = _bench_model(name)
    return out


def _bench_model(name: str) -> dict[str, Any]:
    import onnxpress
    from onnxpress.backends.ort.runner import make_session
    from onnxpress.tools.bench.quant_suite import _models
    from onnxpress.tools.bench.sparsity_curve import share_curve

    source, calibration, held_out, metrics = _models()[name]()
    reference = make_session(onnxpress.load(str(source)), optimization="all", threads=1)
    expected = [reference.run(None, s)[0] for s in held_out]
    rows = []
    for method in METHODS:
        for permute in (False, True):
            pipeline = f"optimize,{PERMUTE if permute else ''}prune{{pattern=2:4,method={method}}}"
            rows.append(_row(source, pipeline, calibration, held_out, expected, metrics, f"{method}{' + permutation' if permute else ''}"))
    rows.append(_row(source, "sparse-2of4", calibration, held_out, expected, metrics, "sparse-2of4 (fidelity cosine>=0.995)"))
    for target in EXTRA_TARGETS.get(name, ()):  # the cosine that lands near the task bar (retrieval 0.98, IoU 0.97)
        pipeline = f'optimize,{PERMUTE}prune{{pattern=2:4,method=auto,fidelity="cosine>={target}"}}'
        rows.append(_row(source, pipeline, calibration, held_out, expected, metrics, f"sparse-2of4 at cosine>={target}"))
    prunable = rows[0]["stats"]["prune"]["weights"]  # the first row prunes every layer the pattern fits
    for row in rows:
        row["share_2of4"] = row["stats"]["prune"]["weights"] / prunable if prunable else 0.0  # weights in layers at 2:4
    result: dict[str, Any] = {"rows": rows, "prunable_weights": prunable, "curve": share_curve(name)}
    if name == "minilm":
        result["latency"] = _latency(source, calibration, held_out, expected, metrics)
    return result


def _row(source: Any, pipeline: str, calibration: list, held_out: list, expected: list, metrics: Any, label: str) -> dict[str, Any]:
    import onnxpress
    from onnxpress.backends.ort.runner import make_session

    start = time.perf_counter()
    model, report = onnxpress.optimize(onnxpress.load(str(source)), pipeline, samples=calibration, verify="off")
    seconds = time.perf_counter() - start
    session = make_session(model, optimization="all", threads=1)
    got = [session.run(None, s)[0] for s in held_out]
    stats = {r.name: r.stats for r in report.records if r.name in ("prune", "permute-channels")}
    row = {"label": label, "pipeline": pipeline, "seconds": seconds, "stats": stats, **metrics(expected, got)}
    print(f"{label}: task {row['task']:.4f}, cosine {row['cosine_mean']:.4f}, {stats.get('prune')}, {seconds:.1f} s", flush=True)
    return row


def _latency(source: Any, calibration: list, held_out: list, expected: list, metrics: Any) -> dict[str, Any]:
    """float / sparse-2of4 / all-layers 2:4 / int8 / sparse-int8 through the ORT backend (legalize-kernels runs
    there), 1 thread: file size, fidelity, interleaved median latency over the held-out samples."""
    import onnxpress
    from onnxpress.backends.base import CompileOptions, compile_model, get_backend

    variants = {
        "float": "optimize",
        "sparse-2of4": "sparse-2of4",
        "2:4 everywhere (SparseGPT + permutation)": f"optimize,{PERMUTE}prune{{pattern=2:4,method=sparsegpt}}",
        "int8": "int8",
        "sparse-int8": "sparse-int8",
    }
    backend, options = get_backend("ort"), CompileOptions(threads=1, samples=calibration[:1])  # legalize-kernels times at its rows
    sessions, rows = {}, {}
    for label, pipeline in variants.items():
        model, _ = onnxpress.optimize(onnxpress.load(str(source)), pipeline, samples=calibration, verify="off")
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "m.onnx")
            onnxpress.save(model, path, max_ir_version=13)
            size = os.path.getsize(path)
        with contextlib.redirect_stderr(io.StringIO()):
            compiled = compile_model(model, backend, options)  # the backend's legalize-kernels runs on ``model``
        with tempfile.TemporaryDirectory() as folder:  # what an ORT deployment loads: SparseMatMul weights packed
            path = os.path.join(folder, "m.onnx")
            onnxpress.save(model, path, max_ir_version=13)
            size_ort = os.path.getsize(path)
        sessions[label] = compiled.handle
        got = [sessions[label].run(None, s)[0] for s in held_out]
        kernels = sum(1 for n in model.graph if n.op_type == "SparseMatMul")
        rows[label] = {"mb": size / 1e6, "mb_ort": size_ort / 1e6, "kernels": kernels, **metrics(expected, got)}
    probe = held_out[:24]
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(3):
        for label, session in sessions.items():
            for sample in probe:
                t0 = time.perf_counter()
                session.run(None, sample)
                times[label].append((time.perf_counter() - t0) * 1e3)
    for label, values in times.items():
        rows[label]["ms"] = float(np.median(values))
        rows[label]["vs_float"] = rows[label]["ms"] / float(np.median(times["float"]))
        print(f"latency {label}: {rows[label]['ms']:.2f} ms ({rows[label]['vs_float']:.2f}x float), {rows[label]['mb']:.2f} MB "
              f"({rows[label]['mb_ort']:.2f} after legalization), "
              f"task {rows[label]['task']:.4f}, kernels {rows[label]['kernels']}", flush=True)
    return rows


def markdown(results: dict[str, Any]) -> str:
    from onnxpress.tools.bench.permutation_bench import markdown as permutation_markdown
    from onnxpress.tools.bench.sparsity_curve import markdown as curve_markdown

    lines = ["permutation\n", permutation_markdown(results["permutation"])]
    for name, result in results.items():
        if name == "permutation":
            continue
        lines += [f"\n{name}: 2:4 one-shot\n", "| method | task | cosine mean | weights at 2:4 | s |", "|---|---|---|---|---|"]
        for r in result["rows"]:
            lines.append(f"| {r['label']} | {r['task']:.4f} | {r['cosine_mean']:.4f} | {r['share_2of4']:.1%} | {r['seconds']:.1f} |")
        if "latency" in result:
            lines += ["\n| variant | MB | MB after ORT legalization | task | ms (1 thread) | vs float | SparseMatMul nodes |",
                      "|---|---|---|---|---|---|---|"]
            for label, r in result["latency"].items():
                lines.append(f"| {label} | {r['mb']:.2f} | {r['mb_ort']:.2f} | {r['task']:.4f} | {r['ms']:.2f} | {r['vs_float']:.2f} | "
                             f"{r['kernels']} |")
        if "curve" in result:
            lines += curve_markdown(name, result["curve"])
    return "\n".join(lines)


def plot(results: dict[str, Any], folder: Any) -> str:
    """The share-at-2:4 curves (``sparsity.png``); skipped without matplotlib."""
    from pathlib import Path

    from onnxpress.irpasses.core.errors import BackendUnavailableError
    from onnxpress.tools.bench.sparsity_curve import plot as plot_curves

    curves = {name: r["curve"] for name, r in results.items() if isinstance(r, dict) and "curve" in r}
    try:
        return str(plot_curves(curves, Path(folder) / "sparsity.png")) if curves else "no curves"
    except BackendUnavailableError as err:
        return f"not drawn ({err.message})"
