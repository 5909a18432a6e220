"""``tools/bench sweep``: ``onnxpress sweep`` on PP-OCRv4 det and MiniLM, serially, with 2 local workers and on a
local 2-worker Ray cluster; the transform+fidelity phase's wall time of each, whether every result is the same
bytes as the serial run's, and the Pareto front with latencies measured afterwards, one model at a time.

Each run is its own ``onnxpress sweep`` process in a fresh directory; the machine should be otherwise idle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CASES: dict[str, dict[str, Any]] = {
    "det": {
        "pipelines": "optimize;int8;auto;cluster4;prune{pattern=2:4};lowrank{budget=params:0.7};lowrank{budget=params:0.5}",
        "grid": ["qdq.calibrator=percentile,entropy,minmax,mse"],
    },
    "minilm": {
        # static int8 keeps MiniLM's MatMuls at float activations (too few MACs per element): not a candidate here
        "pipelines": "optimize;int8-dynamic;w8;w4;cluster4;lowrank{budget=params:0.7};prune{pattern=2:4}",
        "grid": ["weight-only.block=32,128"],
    },
}
RUNS = {"serial": ["--workers", "1"], "local-2": ["--workers", "2"], "ray-2": ["--ray", "local", "--workers", "2"]}


def _data(name: str, folder: Path) -> tuple[Path, Path, Path]:
    """The model and disjoint calibration / eval data, written once."""
    from onnxpress.tools import real_models

    folder.mkdir(parents=True, exist_ok=True)
    if name == "det":
        model = real_models.rapidocr_model("det")
        calib, held = folder / "calib.npz", folder / "eval.npz"
        if not calib.exists():
            np.savez(calib, x=np.stack([p["x"] for p in real_models.text_pages(4, seed=0)]))
            np.savez(held, x=np.stack([p["x"] for p in real_models.text_pages(3, seed=11)]))
        return model, calib, held
    model = real_models.minilm_onnx()
    calib, held = folder / "calib", folder / "eval"
    for path, offset in ((calib, 0), (held, 100)):
        if not path.exists():
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for i, sample in enumerate(real_models.minilm_samples(real_models.sentences(24, offset=offset))):
                np.savez(tmp / f"{i:03d}.npz", **sample)
            tmp.rename(path)
    return model, calib, held


def _sweep(model: Path, calib: Path, held: Path, case: dict[str, Any], out: Path, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "onnxpress.tools.cli", "sweep", str(model), "--calib", str(calib), "--eval", str(held),
           "--pipelines", case["pipelines"], "-o", str(out), *[a for g in case["grid"] for a in ("--grid", g)], *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"sweep failed ({proc.returncode}): {proc.stderr[-2000:]}")
    timing = json.loads((out / "timing.json").read_text())
    return {"wall_s": wall, **timing, "exit": proc.returncode, "stdout": proc.stdout}


def bench_sweep(models: tuple[str, ...] = ("det", "minilm"), out: Path = Path("bench-out/sweep")) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in models:
        case = CASES[name]
        model, calib, held = _data(name, out / name / "data")
        runs: dict[str, Any] = {}
        for run, extra in RUNS.items():
            folder = out / name / run
            shutil.rmtree(folder, ignore_errors=True)
            print(f"sweep {name} {run} ...", flush=True)
            runs[run] = _sweep(model, calib, held, case, folder, [*extra, "--no-latency"])
            print(f"  transform+fidelity {runs[run]['phases']['candidates_s']:.1f} s", flush=True)
        serial = (out / name / "serial" / "results.json").read_bytes()
        same = {run: (out / name / run / "results.json").read_bytes() == serial for run in RUNS}
        print(f"sweep {name}: latency phase on the serial directory ...", flush=True)
        latency = _sweep(model, calib, held, case, out / name / "serial", ["--workers", "1"])  # resumes: only latency runs
        base = runs["serial"]["phases"]["candidates_s"]
        results[name] = {
            "model": str(model), "pipelines": case["pipelines"], "grid": case["grid"],
            "runs": {k: {kk: vv for kk, vv in v.items() if kk != "stdout"} for k, v in runs.items()},
            "speedup": {run: base / r["phases"]["candidates_s"] for run, r in runs.items()},
            "identical_to_serial": same,
            "results": json.loads(serial),
            "measurements": json.loads((out / name / "serial" / "measurements.json").read_text()),
            "latency_phase_s": latency["phases"].get("latency_s"),
            "front_text": latency["stdout"],
            "report": str(out / name / "serial" / "report.html"),
        }
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = ["| model | candidates | serial s | 2 local workers s (x) | Ray, 2 workers s (x) | results identical to serial |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        runs, speed = r["runs"], r["speedup"]
        lines.append(f"| {name} | {len(r['results']['candidates'])} | {runs['serial']['phases']['candidates_s']:.1f} | "
                     f"{runs['local-2']['phases']['candidates_s']:.1f} ({speed['local-2']:.2f}x) | "
                     f"{runs['ray-2']['phases']['candidates_s']:.1f} ({speed['ray-2']:.2f}x) | "
                     f"{'yes' if all(r['identical_to_serial'].values()) else 'NO: ' + str(r['identical_to_serial'])} |")
    for name, r in results.items():
        base = r["results"]["original"]["bytes"]
        front = set(r["results"]["pareto_size_fidelity"])
        lines += ["", f"{name}: every candidate (serial run; latency {r['runs']['serial'].get('threads', 1)} thread, measured after)", "",
                  "| candidate | status | MB | x smaller | min cosine | latency ms | x original | transform s | front |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in r["results"]["candidates"]:
            m = r["measurements"].get(c["id"], {})
            lat = m.get("latency") or {}
            if c["status"] != "ok":
                lines.append(f"| {c['label']} | {c['status']}: {c.get('error', '')[:80]} | | | | | | | |")
                continue
            lines.append(f"| {c['label']} | ok | {c['bytes'] / 1e6:.2f} | {base / c['bytes']:.2f} | {c['fidelity']['score']:.5f} | "
                         f"{lat.get('median_ms', float('nan')):.2f} | {lat.get('vs_original', float('nan')):.2f} | "
                         f"{m.get('transform_s', float('nan')):.1f} | {'yes' if c['id'] in front else ''} |")
    return "\n".join(lines)
