"""INT8 on real models onnxpress was never tuned on (issue 13), against onnxruntime's quantizers, in one run.

- magika 1.0.3 (Google's content-type classifier, 214 classes): inputs are real files of this Python installation
  (standard library and installed packages, round-robin over ~160 extensions) read through magika's own feature
  extraction; 32 calibration files, 400 held-out files: top-1 agreement with the float model.
- NudeNet 3.4.2 (YOLOv8n, 320x320, 18 classes): real photos shipped in wheels (people, LFW faces, other scenes)
  preprocessed by nudenet's own ``_read_image``; 32 calibration, 96 held-out images: argmax-class agreement over
  the anchors float scores >= 0.2 (nudenet's threshold), and the same detections after nudenet's own
  postprocessing and NMS (same class, IoU >= 0.5: F1 against float's detections).
Fidelity is computed twice: onnxruntime with graph optimizations disabled (Q/DQ computed in float, the same on
every CPU; the primary figure) and with ORT_ENABLE_ALL (the CPU's integer kernels). onnxpress ``int8`` is also run
on two more calibration sets to show how much the figure moves with the sample. Latency (ORT_ENABLE_ALL, 1 thread,
batch 1, median of interleaved runs) is skipped when ONNXPRESS_BENCH_LATENCY=0 (``--no-latency``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from onnxpress.tools.bench.quant_cases import CASES as QUANT_CASES
from onnxpress.tools.bench.quant_cases import _preprocessed, _reader
from onnxpress.tools.bench.quant_suite import _cosine, _latency, _size_mb, _write_data

Sample = dict[str, np.ndarray]
CALIBRATION_SETS = 3  # set 0 is what every tool sees; sets 1, 2 only re-run onnxpress int8
CALIBRATION_SIZE = 32


def ort_qdq_defaults(src: str, calib: str, dst: str) -> None:
    """onnxruntime's ``quantize_static`` exactly as documented by default (QDQ, int8 activations and weights,
    per-tensor, MinMax) after its recommended ``quant_pre_process``."""
    from onnxruntime.quantization import quantize_static

    quantize_static(_preprocessed(src), dst, _reader(calib))


CASES: dict[str, Callable[[str, str, str], None]] = {
    "onnxpress int8": QUANT_CASES["onnxpress int8"],
    "onnxpress auto": QUANT_CASES["onnxpress auto"],
    "ORT QDQ defaults": ort_qdq_defaults,
    "ORT static MinMax per-channel": QUANT_CASES["ORT static MinMax"],
    "ORT dynamic": QUANT_CASES["ORT dynamic"],
}


def session(path: Path, optimized: bool, threads: int = 1) -> Any:
    """A CPU session; ``optimized=False`` disables every graph optimization (no QLinear fusions, float math)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def classifier_metrics(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """Top-1 agreement with float, and the cosine of the class-probability vectors."""
    cos = [_cosine(a, b) for a, b in zip(ref, got, strict=True)]
    same = [int(a.argmax()) == int(b.argmax()) for a, b in zip(ref, got, strict=True)]
    return {"task": float(np.mean(same)), "cosine_min": float(np.min(cos))}


def nudenet_detections(output: np.ndarray) -> list[tuple[str, list[int]]]:
    """nudenet's own postprocessing (score >= 0.2, cv2 NMS 0.45) in the 320x320 input frame: (class, [x, y, w, h])."""
    from nudenet.nudenet import _postprocess

    return [(d["class"], d["box"]) for d in _postprocess([output], 0, 0, 1.0, 1.0, 320, 320, 320, 320)]


def _iou(a: list[int], b: list[int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1)


def detector_metrics(ref: list[np.ndarray], got: list[np.ndarray], threshold: float = 0.2) -> dict[str, float]:
    """YOLO output [1, 4 + classes, anchors]: argmax-class agreement over the anchors float scores >= threshold;
    detections after nudenet's NMS matched greedily to float's (same class, IoU >= 0.5): F1 and mean IoU."""
    same, matched, total, ious, float_count = [], 0, 0, [], 0
    for a, b in zip(ref, got, strict=True):
        scores_a, scores_b = a[0, 4:], b[0, 4:]
        keep = scores_a.max(0) >= threshold
        same += list(scores_a[:, keep].argmax(0) == scores_b[:, keep].argmax(0))
        da, db = nudenet_detections(a), nudenet_detections(b)
        total, float_count = total + len(da) + len(db), float_count + len(da)
        free = list(range(len(db)))
        for cls, box in da:
            best = max(free, key=lambda j: _iou(box, db[j][1]) if db[j][0] == cls else -1.0, default=None)
            if best is not None and db[best][0] == cls and _iou(box, db[best][1]) >= 0.5:
                matched += 1
                ious.append(_iou(box, db[best][1]))
                free.remove(best)
    return {
        "task": float(np.mean(same)) if same else float("nan"), "anchors": len(same), "det_f1": 2 * matched / total if total else 1.0,
        "det_iou": float(np.mean(ious)) if ious else float("nan"), "float_detections": float_count,
        "cosine_min": float(np.min([_cosine(a, b) for a, b in zip(ref, got, strict=True)])),
    }


def detection_f1(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]]) -> float:
    """NudeNet's detections (after its own NMS) against float's, as F1: a task metric for fidelity targets,
    ``fidelity="onnxpress.tools.bench.unseen_suite:detection_f1>=0.9"``."""
    first = [next(iter(r.values())) for r in reference], [next(iter(c.values())) for c in candidate]
    return detector_metrics(*first)["det_f1"]


def _models() -> dict[str, Callable[[], tuple[Path, list[list[Sample]], list[Sample], Callable]]]:
    """Per model: (path, calibration sets, held-out samples, metrics), built on demand."""
    from onnxpress.tools import real_models as R

    def magika() -> tuple[Path, list[list[Sample]], list[Sample], Callable]:
        sets = [R.magika_samples(CALIBRATION_SIZE, offset=CALIBRATION_SIZE * k) for k in range(CALIBRATION_SETS)]
        return R.magika_model(), sets, R.magika_samples(400, offset=R.MAGIKA_EVAL_OFFSET), classifier_metrics

    def nudenet() -> tuple[Path, list[list[Sample]], list[Sample], Callable]:
        sets = [R.nudenet_samples(R.detector_photos(CALIBRATION_SIZE, seed=k)) for k in range(CALIBRATION_SETS)]
        return R.nudenet_model(), sets, R.nudenet_samples(R.detector_photos(96, seed=0, evaluation=True)), detector_metrics

    return {"magika": magika, "nudenet": nudenet}


def bench_model(name: str, work: Path, cases: dict[str, Callable[[str, str, str], None]] | None = None,
                describe: Callable[[Path, Sample], dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """One row per case (``cases``: label -> (source, calibration .npz, destination); default: the quantizers,
    with onnxpress int8 rerun on the other calibration sets), ``describe``'s fields from each written model."""
    src, calib_sets, evaluation, metrics = _models()[name]()
    calib_paths = [_write_data(s, work / f"{name}-calib{k}") for k, s in enumerate(calib_sets)]
    references = {opt: [session(src, opt).run(None, s)[0] for s in evaluation] for opt in (False, True)}
    rows: dict[str, dict[str, Any]] = {"float": {"mb": src.stat().st_size / 1e6, "task": 1.0, "task_ort_all": 1.0}}
    if describe is not None:
        rows["float"].update(describe(src, evaluation[0]))
    models = {"float": src}
    jobs = [(label, 0) for label in cases] if cases is not None else \
        [(label, 0) for label in CASES] + [("onnxpress int8", k) for k in range(1, len(calib_paths))]
    cases = CASES if cases is None else cases
    for label, k in jobs:
        row_label = label if k == 0 else f"{label} (calibration set {k})"
        folder = work / f"{name}-{row_label.replace(' ', '_').replace('(', '').replace(')', '')}"
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / "model.onnx"
        print(f"  {name}: {row_label} ...", flush=True, file=sys.stderr)
        start = time.perf_counter()
        row: dict[str, Any] = {}
        rows[row_label] = row
        try:
            cases[label](str(src), calib_paths[k], str(dst))
        except BaseException as err:  # a tool that fails is a result, not a crash of the bench  # noqa: B036
            row["error"] = f"{type(err).__name__}: {err}"[:160].replace("|", "/").replace("\n", " ")
            continue
        row["quantize_s"] = time.perf_counter() - start
        try:
            for opt in (False, True):
                runner = session(dst, opt)
                result = metrics(references[opt], [runner.run(None, x)[0] for x in evaluation])
                if opt:
                    row["task_ort_all"], row["det_f1_ort_all"] = result["task"], result.get("det_f1")
                else:
                    row.update(result)
        except Exception as err:  # an output onnxruntime refuses is a result too
            row["error"] = f"does not run: {str(err)[:120]}"
            continue
        row["mb"] = _size_mb(folder)
        if describe is not None:
            row.update(describe(dst, evaluation[0]))
        if k == 0:
            models[row_label] = dst
    if os.environ.get("ONNXPRESS_BENCH_LATENCY", "1") != "0":
        sessions = {label: session(path, True) for label, path in models.items()}
        for label, ms in _latency(sessions, evaluation[0]).items():
            rows[label]["ms_1t"] = ms
    rows["float"]["inputs"] = {"calibration": len(calib_sets[0]), "calibration_sets": len(calib_sets), "evaluation": len(evaluation)}
    return rows


def bench_unseen(models: tuple[str, ...] = ("magika", "nudenet")) -> dict[str, dict[str, dict[str, Any]]]:
    work = Path(tempfile.mkdtemp(prefix="onnxpress-unseen-"))
    return {name: bench_model(name, work) for name in models}


TASK = {"magika": "top-1 agreement", "nudenet": "anchor class agreement (NMS detection F1)"}


def markdown(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    for name, rows in results.items():
        float_ms, float_mb = rows["float"].get("ms_1t") or float("nan"), rows["float"]["mb"]
        lines += [
            f"\n**{name}** ({rows['float']['inputs']})\n",
            f"| variant | MB | x smaller | {TASK[name]}, ORT opts off | same, ORT all opts | min cos | ms (1t) | vs float | quantize s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, r in rows.items():
            if "error" in r:
                lines.append(f"| {label} | failed: {r['error']} | | | | | | | |")
                continue
            lines.append(f"| {label} | {r['mb']:.2f} | {float_mb / r['mb']:.2f} | {result_cells(r, float_ms)} |")
    return "\n".join(lines)


def result_cells(row: dict[str, Any], float_ms: float) -> str:
    """A row's task (detection F1), the same with ORT's optimizations, min cosine, latency, vs float, seconds."""
    f1 = f" ({row['det_f1']:.3f})" if "det_f1" in row else ""
    f1_all = f" ({row['det_f1_ort_all']:.3f})" if row.get("det_f1_ort_all") is not None else ""
    ms = row.get("ms_1t", float("nan"))
    return (f"{row['task']:.4f}{f1} | {row['task_ort_all']:.4f}{f1_all} | {row.get('cosine_min', 1.0):.4f} | {ms:.2f} | "
            f"{ms / float_ms:.2f} | {row.get('quantize_s', 0.0):.1f}")
