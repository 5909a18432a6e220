"""tools/bench lowrank: low-rank factorization of MiniLM's encoder MatMuls, whitened (SVD-LLM) against plain SVD.

For kept shares params 0.9 / 0.8 / 0.7 and the fidelity-targeted ``lowrank-auto`` pipeline (cosine >= 0.999 on
8 held-back calibration sentences), each with method=whitened and method=svd: the share of the factorizable
MatMul weights removed, retrieval agreement and cosine against the float model on 320 held-out sentences, and
onnxruntime latency (1 thread, interleaved medians against float). Then ``lowrank`` followed by ``int8``
against ``int8`` alone: file size and retrieval. Calibration: 128 sentences (more than the quant suite's 32:
E[x xᵀ] of the 1536 FFN inputs needs more than 1536 token rows to be full rank).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

LOWRANK_FIDELITY = 'lowrank{fidelity="cosine>=0.999"}'
CALIBRATION_SENTENCES = 128


def _cases() -> list[tuple[str, str]]:
    cases = []
    for keep in ("0.9", "0.8", "0.7"):
        for method in ("whitened", "svd"):
            cases.append((f"params:{keep} {method}", f"optimize,lowrank{{budget=params:{keep},method={method}}}"))
    for method in ("whitened", "svd"):
        cases.append((f"fidelity cosine>=0.999 {method}", f'optimize,lowrank{{fidelity="cosine>=0.999",method={method}}}'))
    cases += [("int8", "int8"), ("params:0.9 whitened + int8", "optimize,lowrank{budget=params:0.9},int8"),
              ("fidelity whitened + int8", f"optimize,{LOWRANK_FIDELITY},int8")]
    return cases


def bench_lowrank() -> dict[str, Any]:
    import onnxpress
    from onnxpress.backends.ort.runner import make_session
    from onnxpress.tools import real_models as R
    from onnxpress.tools.bench.quant_suite import _latency, minilm_metrics

    source = str(R.minilm_onnx())
    calibration = R.minilm_samples(R.sentences(CALIBRATION_SENTENCES, offset=0))
    held_out = R.minilm_samples(R.sentences(320, offset=300))
    timing_sample = max(held_out, key=lambda s: s["input_ids"].shape[1])
    reference = make_session(source, optimization="all", threads=1)
    expected = [reference.run(None, s)[0] for s in held_out]
    rows = []
    for label, pipeline in _cases():
        start = time.perf_counter()
        model, report = onnxpress.optimize(onnxpress.load(source), pipeline, samples=calibration, verify="off")
        seconds = time.perf_counter() - start
        stats = next((r.stats for r in report.records if r.name == "lowrank"), {})
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.onnx")
            onnxpress.save(model, path, max_ir_version=13)
            size = os.path.getsize(path)
            session = make_session(path, optimization="all", threads=1)
            got = [session.run(None, s)[0] for s in held_out]
            latency = _latency({"float": reference, "model": session}, timing_sample)
        removed = 1 - stats["params_after"] / stats["params_before"] if stats else 0.0
        row = {"case": label, "spec": pipeline, "bytes": size, "removed": removed, "factorized": stats.get("factorized", 0),
               "latency_ms": latency["model"], "float_ms": latency["float"], "latency_ratio": latency["model"] / latency["float"],
               "seconds": seconds, **minilm_metrics(expected, got)}
        rows.append(row)
        print(f"minilm {label}: removed {removed:.1%}, retrieval {row['task']:.4f}, cosine {row['cosine_mean']:.4f}, "
              f"latency {row['latency_ratio']:.2f}x float, {size / 1e6:.2f} MB, {seconds:.1f} s", flush=True)
    return {"minilm": {"float_bytes": os.path.getsize(source), "timing_tokens": int(timing_sample["input_ids"].shape[1]), "rows": rows}}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for name, result in results.items():
        lines += [f"\n{name} (float {result['float_bytes'] / 1e6:.1f} MB; latency: 1 thread, {result['timing_tokens']} tokens, "
                  "interleaved medians on a shared VM)\n",
                  "| case | MatMul params removed | layers factorized | retrieval | cosine mean | cosine min | latency x float | MB "
                  "| transform s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in result["rows"]:
            lines.append(f"| {r['case']} | {r['removed']:.1%} | {r['factorized']} | {r['task']:.4f} | {r['cosine_mean']:.4f} | "
                         f"{r['cosine_min']:.4f} | {r['latency_ratio']:.2f} | {r['bytes'] / 1e6:.2f} | {r['seconds']:.1f} |")
    return "\n".join(lines)
