"""tools/bench lowrank: training-free low-rank factorization on MiniLM and PP-OCRv4 det / rec, whitened
(SVD-LLM, activation-aware) against plain SVD at the same budgets, the fidelity-targeted search, and
``lowrank`` then ``int8`` against ``int8`` alone.

Per model: a sweep of budgets (MiniLM: params 0.97 / 0.9 / 0.8 / 0.7; det: MACs 0.7 / 0.6 / 0.5, rec: MACs 0.9
to 0.5 of the factorizable layers), each with method=whitened, method=svd and whitened with the sequential refit; the
fidelity search (MiniLM: the default cosine>=0.999, and retrieval >= 0.98 with the refit then int8; det:
text-mask IoU >= 0.975, rec: character agreement >= 0.99, plain and refit, on calibration samples held back
from the statistics); every row with the whole model's weight parameters and multiply-adds (layers with
constant weights, counted from the shapes on a held-out sample) against float, the task metric against float
on held-out samples, and onnxruntime latency (ORT_ENABLE_ALL, 1 thread, interleaved medians against the float model after ``optimize``).
The fidelity rows carry each layer's error-vs-cost curve (the data for "why a bar is not met").
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

MODELS = ("minilm", "det", "rec")
CALIBRATION_SENTENCES = 300
"""MiniLM: E[x xᵀ] of the 1536 FFN inputs needs more than 1536 token rows to be full rank, and the sequential
refit overfits 128 sentences (2,852 tokens); 300 is all there is before the held-out ones."""


def _setup(name: str) -> dict[str, Any]:
    """Model path, calibration and held-out samples (disjoint), the task metric, and how the search judges."""
    from onnxpress.tools import real_models as R
    from onnxpress.tools.bench.quant_suite import det_metrics, minilm_metrics, rec_metrics

    if name == "minilm":
        held = R.minilm_samples(R.sentences(320, offset=300))
        return {"source": R.minilm_onnx(), "calibration": R.minilm_samples(R.sentences(CALIBRATION_SENTENCES, offset=0)),
                "held_out": held, "metrics": minilm_metrics, "timing": max(held, key=lambda s: s["input_ids"].shape[1]),
                "budgets": ("params:0.97", "params:0.9", "params:0.8", "params:0.7"), "multiple": 16,
                "target": ("retrieval", 0.98, 64), "floor": "params:0.5"}
    if name == "det":
        pages = R.text_pages(20, seed=0)
        return {"source": R.rapidocr_model("det"), "calibration": pages[:12], "held_out": pages[12:], "metrics": det_metrics,
                "timing": pages[12], "budgets": ("macs:0.7", "macs:0.6", "macs:0.5"), "multiple": 8,
                "target": ("text-mask IoU", 0.975, 4)}
    lines = R.text_lines(24, seed=0, offset=0)
    return {"source": R.rapidocr_model("rec"), "calibration": lines, "held_out": R.text_lines(32, seed=1, offset=40),
            "metrics": rec_metrics,
            "timing": lines[0], "budgets": ("macs:0.9", "macs:0.8", "macs:0.7", "macs:0.6", "macs:0.5"), "multiple": 8,
            "target": ("character agreement", 0.99, 8)}


def _task_metric(metrics: Callable) -> Callable:
    """The fidelity search's metric from a bench metric: (float outputs, factorized outputs) -> task score."""
    def metric(reference: list[dict], got: list[dict]) -> float:
        return metrics([next(iter(r.values())) for r in reference], [next(iter(g.values())) for g in got])["task"]

    return metric


def _cases(name: str, setup: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, pipeline text or a function model -> (model, report)) per row."""
    multiple = setup["multiple"]
    cases: list[tuple[str, Any]] = []
    for budget in setup["budgets"]:
        for method in ("whitened", "svd"):
            cases.append((f"{budget} {method}", f"optimize,lowrank{{budget={budget},method={method},multiple={multiple}}}"))
        cases.append((f"{budget} whitened sequential", f"optimize,lowrank{{budget={budget},multiple={multiple},sequential=true}}"))
    if name == "minilm":
        for method in ("whitened", "svd"):
            cases.append((f"fidelity cosine>=0.999 {method}", f"optimize,lowrank{{method={method}}}"))
        label, bound, judged = setup["target"]
        cases += [("int8", "int8"), ("lowrank-int8 (fidelity, then int8)", "lowrank-int8"),
                  ("params:0.9 whitened, then int8", "optimize,lowrank{budget=params:0.9},int8"),
                  (f"fidelity {label}>={bound} whitened sequential, then int8",
                   _searching(setup, "whitened", bound, judged, sequential=True, then="qdq,dedup-initializers,dead-code"))]
        return cases
    label, bound, judged = setup["target"]
    for method in ("whitened", "svd"):
        cases.append((f"fidelity {label}>={bound} {method}", _searching(setup, method, bound, judged)))
    cases.append((f"fidelity {label}>={bound} whitened sequential", _searching(setup, "whitened", bound, judged, sequential=True)))
    return cases


def _searching(setup: dict[str, Any], method: str, bound: float, judged: int, sequential: bool = False,
               then: str = "") -> Callable:
    """The fidelity search on the task metric (Python API), optionally followed by the pipeline ``then``."""
    def run(model: Any, samples: list) -> tuple[Any, Any]:
        import onnxpress
        from onnxpress.irpasses.lowrank.lowrank import LowRank

        model, _ = onnxpress.optimize(model, "convert-opset{min=17},optimize" if then else "optimize", verify="off")
        pass_ = LowRank(method=method, budget=setup.get("floor", "macs:0.3"), fidelity=str(bound), metric=_task_metric(setup["metrics"]),
                        eval_samples=judged, multiple=setup["multiple"], sequential=sequential)
        model, report = onnxpress.optimize(model, [pass_], samples=samples, verify="off")
        if not then:
            return model, report
        quantized, _ = onnxpress.optimize(model, then, samples=samples, verify="off")
        return quantized, report  # the lowrank record and details are the first step's

    return run


def _weight_shape(node: Any) -> tuple[int, ...] | None:
    """The shape of a layer's constant weight, also when int8 codes are dequantized in the graph."""
    value = node.inputs[1] if len(node.inputs) > 1 else None
    if value is None:
        return None
    if value.const_value is not None:
        return tuple(value.const_value.shape)
    producer = value.producer()  # int8 weights dequantized in the graph: DequantizeLinear, or Cast then Mul by the scale
    static = value.shape is not None and value.shape.is_static()
    if producer is not None and producer.op_type in ("DequantizeLinear", "Mul", "Cast") and static:
        return tuple(int(d) for d in value.shape)
    return None


def weighted_size(model: Any, sample: dict[str, np.ndarray]) -> tuple[int, float]:
    """(float weight parameters outside embedding tables, multiply-adds of the layers with constant weights)
    of an onnx-ir model on ``sample``: counted from the tensor shapes."""
    from onnxpress.irpasses.quant.collect import tensor_shapes

    layers = [n for n in model.graph if n.op_type in ("Conv", "MatMul", "Gemm") and _weight_shape(n) is not None]
    shapes = tensor_shapes(model, sample, [n.outputs[0].name for n in layers])
    macs = 0.0
    for node in layers:
        weight = _weight_shape(node)
        out = float(np.prod(shapes[node.outputs[0].name]))
        if node.op_type == "Conv":
            macs += out * float(np.prod(weight[1:]))
        else:
            macs += out * (weight[1] if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) else weight[0])
    embeddings = {id(n.inputs[0]) for n in model.graph if n.op_type == "Gather" and n.inputs[0] is not None}
    params = sum(v.const_value.size for v in model.graph.initializers.values()
                 if id(v) not in embeddings and v.const_value is not None and v.const_value.dtype in _FLOAT_TYPES())
    return int(params), macs


def _FLOAT_TYPES() -> tuple:  # noqa: N802 - a lazily imported constant
    import onnx_ir as ir

    return (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT4, ir.DataType.UINT4)


def bench_lowrank(models: tuple[str, ...] = MODELS) -> dict[str, Any]:
    out = {}
    for name in models:
        out[name] = _bench_model(name)
    return out


def _bench_model(name: str) -> dict[str, Any]:
    import onnxpress
    from onnxpress.backends.ort.runner import make_session
    from onnxpress.tools.bench.quant_suite import _latency

    setup = _setup(name)
    source, held_out, metrics = str(setup["source"]), setup["held_out"], setup["metrics"]
    floated, _ = onnxpress.optimize(onnxpress.load(source), "optimize", verify="off")
    float_params, float_macs = weighted_size(floated, held_out[0])
    with tempfile.TemporaryDirectory() as folder:  # latency against the optimized float model: the factors' effect only
        onnxpress.save(floated, os.path.join(folder, "float.onnx"), max_ir_version=13)
        reference = make_session(os.path.join(folder, "float.onnx"), optimization="all", threads=1)
    original = make_session(source, optimization="all", threads=1)
    expected = [original.run(None, s)[0] for s in held_out]
    rows = []
    for label, case in _cases(name, setup):
        start = time.perf_counter()
        if callable(case):
            model, report = case(onnxpress.load(source), setup["calibration"])
        else:
            model, report = onnxpress.optimize(onnxpress.load(source), case, samples=setup["calibration"], verify="off")
        seconds = time.perf_counter() - start
        stats = next((r.stats for r in report.records if r.name == "lowrank"), {})
        details = (report.details or {}).get("lowrank", {})
        params, macs = weighted_size(model, held_out[0])
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.onnx")
            onnxpress.save(model, path, max_ir_version=13)
            size = os.path.getsize(path)
            session = make_session(path, optimization="all", threads=1)
            got = [session.run(None, s)[0] for s in held_out]
            latency = _latency({"float": reference, "model": session}, setup["timing"])
        row = {"case": label, "spec": case if isinstance(case, str) else "Python API: LowRank(fidelity=…, metric=task)", "bytes": size,
               "params": params, "params_removed": 1 - params / float_params, "macs": macs, "macs_removed": 1 - macs / float_macs,
               "factorizable_params_removed": 1 - stats["params_after"] / stats["params_before"] if stats.get("params_before") else 0.0,
               "factorized": stats.get("factorized", 0), "keep": details.get("keep"), "method": details.get("method"),
               "latency_ms": latency["model"], "float_ms": latency["float"], "latency_ratio": latency["model"] / latency["float"],
               "seconds": seconds, **metrics(expected, got)}
        if label.startswith("fidelity") and details:
            row["layers"] = details.get("layers")
        rows.append(row)
        print(f"{name} {label}: params -{row['params_removed']:.1%}, MACs -{row['macs_removed']:.1%}, task {row['task']:.4f}, "
              f"cosine {row['cosine_mean']:.4f}, latency {row['latency_ratio']:.2f}x float, {size / 1e6:.2f} MB, {seconds:.1f} s",
              flush=True)
    return {"float_bytes": os.path.getsize(source), "float_params": float_params, "float_macs": float_macs,
            "timing_shape": {k: list(v.shape) for k, v in setup["timing"].items()}, "rows": rows}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for name, result in results.items():
        lines += [f"\n{name} (float {result['float_bytes'] / 1e6:.1f} MB, {result['float_params'] / 1e6:.2f} M weight parameters "
                  f"outside embeddings, {result['float_macs'] / 1e6:.0f} M MACs; latency: 1 thread, input {result['timing_shape']}, "
                  "interleaved medians)\n",
                  "| case | params removed | MACs removed | layers factorized | task | cosine mean | cosine min | latency x float | MB "
                  "| transform s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["rows"]:
            lines.append(f"| {r['case']} | {r['params_removed']:.1%} | {r['macs_removed']:.1%} | {r['factorized']} | {r['task']:.4f} | "
                         f"{r['cosine_mean']:.4f} | {r['cosine_min']:.4f} | {r['latency_ratio']:.2f} | {r['bytes'] / 1e6:.2f} | "
                         f"{r['seconds']:.1f} |")
    return "\n".join(lines)


BARS = {"minilm": (30.0, 0.98), "det": (40.0, 0.97), "rec": (None, 0.99)}
"""Issue 16's bars per model: (share removed in %, task metric); rec's names no share."""
TASKS = {"minilm": "retrieval agreement", "det": "text-mask IoU", "rec": "character agreement"}


def _series(case: str) -> str | None:
    """The plotted line a bench row belongs to (None: int8 rows, whose share is not low rank's)."""
    if "int8" in case:
        return None
    method = "plain SVD" if case.endswith(" svd") else "whitened + sequential refit" if case.endswith("sequential") else "whitened"
    return f"fidelity search, {method}" if case.startswith("fidelity") else method


def plot(results: dict[str, Any], folder: Any) -> str:
    """Task metric against the share of parameters (MiniLM) or MACs (det, rec) removed, per method, with the
    bars as dashed lines (``lowrank.png``); skipped without matplotlib."""
    from pathlib import Path

    from onnxpress.irpasses.core.errors import BackendUnavailableError
    from onnxpress.tools.plot import plot_tradeoff_panels

    panels = {}
    for name, result in results.items():
        measure = "params_removed" if name == "minilm" else "macs_removed"
        series: dict[str, list[tuple[float, float]]] = {}
        for row in result["rows"]:
            label = _series(row["case"])
            if label is not None:
                series.setdefault(label, []).append((100 * row[measure], row["task"]))
        share, task = BARS.get(name, (None, None))
        panels[name] = {"xlabel": f"{'parameters' if name == 'minilm' else 'MACs'} removed (%)", "ylabel": TASKS.get(name, "task"),
                        "series": series, "bar": (share, task) if task is not None else None}
    try:
        return str(plot_tradeoff_panels(panels, Path(folder) / "lowrank.png", "lowrank: task metric vs float, held-out data"))
    except BackendUnavailableError as err:
        return f"not drawn ({err.message})"
