"""Backends on real models: ORT vs OpenVINO latency (1 thread, batch 1) and agreement, TensorRT engine builds."""

from __future__ import annotations

import time
import warnings
from typing import Any

from onnxpress.irpasses.core.compare import compare_outputs


def real_model_cases() -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    from onnxpress.tools import real_models as R

    return {
        "PP-OCRv4 det": (R.rapidocr_model("det"), R.text_pages(2)),
        "PP-OCRv4 rec": (R.rapidocr_model("rec"), R.text_lines(3, width=320)),
        "PP-OCR cls": (R.rapidocr_model("cls"), R.text_lines(3, width=192)),
        "all-MiniLM-L6-v2": (R.minilm_onnx(), R.minilm_samples(R.sentences(4))),
    }


def bench_backends(runs: int = 20) -> dict[str, dict[str, Any]]:
    import onnxpress
    from onnxpress.backends.base import CompileOptions, compile_model, get_backend

    rows: dict[str, dict[str, Any]] = {}
    for label, (path, samples) in real_model_cases().items():
        row: dict[str, Any] = {}
        outputs = {}
        for name in ("ort", "openvino"):
            backend = get_backend(name)
            artifact = compile_model(onnxpress.load(path), backend, CompileOptions(threads=1))
            outputs[name] = [backend.run(artifact, s) for s in samples]
            row[f"{name}_ms"] = backend.bench(artifact, samples[0], runs=runs).median_ms
        row["cosine_min"] = min(e.cosine for a, b in zip(outputs["ort"], outputs["openvino"]) for e in compare_outputs(a, b, 1e-4, 1e-5))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = compile_model(onnxpress.load(path), get_backend("tensorrt"), CompileOptions(samples=samples))
        row["tensorrt_build_s"] = time.perf_counter() - start
        row["tensorrt_library"] = f"{engine.metadata['library']} {engine.metadata['library_version']}"
        row["engine_mb"] = engine.metadata["engine_bytes"] / 1e6
        row["engine_runs_here"] = engine.metadata["availability"]
        rows[label] = row
        print(f"  {label}: {row}", flush=True)
    return rows


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | ORT ms | OpenVINO ms | OpenVINO / ORT | min cosine | TensorRT build s | engine MB |", "|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['ort_ms']:.2f} | {r['openvino_ms']:.2f} | {r['openvino_ms'] / r['ort_ms']:.2f} | "
            f"{r['cosine_min']:.7f} | {r['tensorrt_build_s']:.2f} | {r['engine_mb']:.1f} |"
        )
    return "\n".join(lines)
