"""tools/bench unseen_compress: pruning and low rank on real models they were never tuned on, in one run.

The models, data and metrics of ``unseen_suite`` (magika's content-type classifier, top-1 agreement on 400
held-out files; NudeNet's YOLOv8n, anchor-class agreement and detection F1 on 96 held-out photos), 32
calibration samples. Each pipeline runs from the CLI as a user would (``onnxpress opt -p ... --calib``):
the fidelity-targeted pipelines (``sparse-2of4`` at cosine>=0.995, ``lowrank-auto`` at cosine>=0.999, judged on
8 held-back calibration samples) say whether their target holds on data they never saw; the fixed ones
(2:4 everywhere, MACs budgets) show the trade. Every row also carries the weight parameters and multiply-adds
of the layers with constant weights (``lowrank_suite.weighted_size`` on the first held-out sample) against
float, and int8 for reference.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from onnxpress.tools.bench.quant_cases import _onnxpress
from onnxpress.tools.bench.unseen_suite import TASK, Sample, bench_model, result_cells

CASES = {
    "onnxpress int8": _onnxpress("int8"),
    "sparse-2of4 (cosine>=0.995)": _onnxpress("sparse-2of4"),
    "2:4 everywhere (SparseGPT + permutation)": _onnxpress("optimize,permute-channels{pattern=2:4},prune{pattern=2:4,method=sparsegpt}"),
    "sparse-int8": _onnxpress("sparse-int8"),
    "lowrank-auto (cosine>=0.999)": _onnxpress("lowrank-auto"),
    "lowrank macs:0.7": _onnxpress("optimize,lowrank{budget=macs:0.7,multiple=8}"),
    "lowrank macs:0.7 sequential": _onnxpress("optimize,lowrank{budget=macs:0.7,multiple=8,sequential=true}"),
    "lowrank-int8": _onnxpress("lowrank-int8"),
}


DETECTION = "onnxpress.tools.bench.unseen_suite:detection_f1>=0.9"
TASK_CASES = {
    "magika": {
        "sparse-2of4 (top1>=0.99)": _onnxpress('optimize,permute-channels{pattern=2:4},prune{pattern=2:4,method=auto,'
                                              'fidelity="top1>=0.99",eval_samples=16}'),
        "lowrank (top1>=0.99)": _onnxpress('optimize,lowrank{fidelity="top1>=0.99",eval_samples=16}'),
    },
    "nudenet": {
        "sparse-2of4 (detection F1>=0.9)": _onnxpress('optimize,permute-channels{pattern=2:4},prune{pattern=2:4,method=auto,'
                                                     f'fidelity="{DETECTION}",eval_samples=16}}'),
        "lowrank (detection F1>=0.9)": _onnxpress(f'optimize,lowrank{{fidelity="{DETECTION}",eval_samples=16}}'),
    },
}
"""The fidelity searches again with the task's own metric as the target (``module:function`` in the fidelity
text for NudeNet's detections; magika's class is the built-in top1), judged on 16 held-back calibration samples."""


def describe(path: Path, sample: Sample) -> dict[str, Any]:
    """Weight parameters (outside embedding tables), multiply-adds of the layers with constant weights, and the
    share of those weights that are zero (pruning leaves them in the file)."""
    import numpy as np
    import onnxpress
    from onnxpress.tools.bench.lowrank_suite import weighted_size

    model = onnxpress.load(str(path))
    params, macs = weighted_size(model, sample)
    weights = [v.const_value.numpy() for v in model.graph.initializers.values()
               if v.const_value is not None and v.const_value.size >= 4096 and len(v.const_value.shape) >= 2]
    zeros = sum(int(np.count_nonzero(w == 0)) for w in weights) / max(sum(w.size for w in weights), 1)
    return {"params": params, "macs": macs, "zero_share": zeros}


def bench_unseen_compress(models: tuple[str, ...] = ("magika", "nudenet")) -> dict[str, dict[str, dict[str, Any]]]:
    work = Path(tempfile.mkdtemp(prefix="onnxpress-unseen-compress-"))
    return {name: bench_model(name, work, {**CASES, **TASK_CASES.get(name, {})}, describe) for name in models}


def markdown(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    for name, rows in results.items():
        base = rows["float"]
        float_ms = base.get("ms_1t") or float("nan")
        lines += [f"\n**{name}** ({base['inputs']}; {base['params'] / 1e6:.2f} M weight parameters, {base['macs'] / 1e6:.0f} M MACs)\n",
                  f"| variant | MB | params removed | MACs removed | zero weights | {TASK[name]}, ORT opts off | same, ORT all opts "
                  "| min cos | ms (1t) | vs float | s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in rows.items():
            if "error" in r:
                lines.append(f"| {label} | failed: {r['error']} | | | | | | | | | |")
                continue
            removed = f"{1 - r['params'] / base['params']:.1%} | {1 - r['macs'] / base['macs']:.1%}"
            lines.append(f"| {label} | {r['mb']:.2f} | {removed} | {r['zero_share']:.1%} | {result_cells(r, float_ms)} |")
    return "\n".join(lines)
