"""Weight-only 4-bit (block 32) on all-MiniLM-L6-v2: onnxpress vs ORT's MatMulNBitsQuantizer, same run.

Size, fidelity on held-out sentences (embedding cosine; nearest-neighbour retrieval agreement with the float
model), ORT latency at 1 thread (ORT_ENABLE_ALL, batch 1), quantization wall time and peak memory (own process).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _embed(path: Path, samples: list[dict[str, np.ndarray]], threads: int = 1) -> tuple[np.ndarray, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, s)[0] for s in samples]), session


def retrieval_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of sentences whose nearest other sentence is the same under both embeddings."""
    def nearest(e: np.ndarray) -> np.ndarray:
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(axis=1)

    return float(np.mean(nearest(reference) == nearest(candidate)))


def bench_quant() -> dict[str, dict[str, float]]:
    from onnxpress.tools import real_models as R
    from onnxpress.tools.bench.__main__ import run_measured

    src = R.minilm_onnx()
    samples = R.minilm_samples(R.sentences(96, offset=300))
    work = Path(tempfile.mkdtemp(prefix="onnxpress-quant-"))
    reference, ref_session = _embed(src, samples)
    rows: dict[str, dict[str, float]] = {}
    sessions = {"float": ref_session}
    from onnxpress.tools.bench.quant_cases import CASES

    for label in CASES:
        dst = work / f"{label.split()[0]}.onnx"
        wall, rss, rc = run_measured([sys.executable, "-m", "onnxpress.tools.bench.quant_cases", label, str(src), str(dst)])
        if rc:
            rows[label] = {"error": float(rc)}
            continue
        emb, session = _embed(dst, samples)
        sessions[label] = session
        cos = np.sum(emb * reference, axis=1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
        rows[label] = {
            "mb": sum(f.stat().st_size for f in dst.parent.glob(dst.name + "*")) / 1e6,
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
            "retrieval_agreement": retrieval_agreement(reference, emb),
            "quantize_s": wall,
            "quantize_peak_mib": rss,
        }
    rows["float"] = {"mb": os.path.getsize(src) / 1e6, "cosine_mean": 1.0, "cosine_min": 1.0, "retrieval_agreement": 1.0}
    sample = samples[0]
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, sample)
    for _ in range(8):
        for label, s in sessions.items():
            for _ in range(30):
                t0 = time.perf_counter()
                s.run(None, sample)
                times[label].append((time.perf_counter() - t0) * 1e3)
    for label, values in times.items():
        rows[label]["ms_1t"] = statistics.median(values)
    return rows


def markdown(rows: dict[str, dict[str, float]]) -> str:
    lines = [
        "| all-MiniLM-L6-v2 | MB | mean cosine | min cosine | retrieval agreement | ORT ms (1t) | quantize s | quantize peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r.get('mb', 0):.1f} | {r.get('cosine_mean', 0):.5f} | {r.get('cosine_min', 0):.5f} | "
            f"{r.get('retrieval_agreement', 0):.3f} | {r.get('ms_1t', 0):.2f} | {r.get('quantize_s', 0):.2f} | {r.get('quantize_peak_mib', 0):.0f} |"
        )
    return "\n".join(lines)
