"""tools/bench fuzz: the long fuzz run of issue 20.

10,000 mutated models (the ONNX test corpus shipped in the ``onnx`` package plus the real models found
through installed packages) through load, cleanup, optimize, ``inspect`` and ``compare``; 1,000 damaged sample
files through NpzSamples, validation and ``compare --inputs``. Findings are saved under ``bench-out/fuzz`` for
replay (``python -m onnxpress.tools.fuzz replay FILE``). ``ONNXPRESS_FUZZ_MODELS`` / ``ONNXPRESS_FUZZ_SAMPLES``
set smaller counts for a machine with less time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def bench_fuzz(out: Path = Path("bench-out/fuzz")) -> dict[str, Any]:
    from onnxpress.tools import fuzz

    models = int(os.environ.get("ONNXPRESS_FUZZ_MODELS", "10000"))
    samples = int(os.environ.get("ONNXPRESS_FUZZ_SAMPLES", "1000"))
    seeds = fuzz.corpus_models() + fuzz.real_models()
    model_report = fuzz.fuzz_models(models, seed=20, seeds=seeds, timeout=60, out=out / "models")
    sample_report = fuzz.fuzz_samples(samples, seed=20, timeout=60, out=out / "samples")
    return {"seeds": [str(p) for p in seeds], "models": model_report.to_dict(), "samples": sample_report.to_dict()}


def markdown(results: dict[str, Any]) -> str:
    lines = ["| input | cases | refused | warned | accepted | internal (exit 1) | leaks | stray prints | hangs | crashes | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind in ("models", "samples"):
        r = results[kind]
        v = r["verdicts"]
        lines.append(f"| {kind} | {r['cases']} | {v.get('refused', 0)} | {v.get('warned', 0)} | {v.get('accepted', 0)} | "
                     f"{v.get('internal', 0)} | {v.get('leak', 0)} | {v.get('stray-output', 0)} | {v.get('hang', 0)} | "
                     f"{v.get('crash', 0)} | {r['seconds']:.0f} |")
    for kind in ("models", "samples"):
        lines.append(f"\n{kind} by mutation:")
        for mutation, counts in results[kind]["by_mutation"].items():
            lines.append(f"- {mutation}: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    return "\n".join(lines)
