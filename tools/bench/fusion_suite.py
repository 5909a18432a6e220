"""Cleanup + fusion against onnxslim, onnxsim and onnxoptimizer on the real models, in one run.

Per model and tool: node count, transform wall time (in this process, model already loaded where the tool
allows), max abs output error vs the original on real inputs, and ORT CPU latency (ORT_ENABLE_ALL, batch 1,
1 and 2 threads): medians of interleaved rounds, every variant timed in the same process.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
import warnings
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    proto.ir_version = min(proto.ir_version, 10)
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _transform(tool: str, path: str) -> tuple[onnx.ModelProto, float]:
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    if tool == "original":
        return onnx.load(path), 0.0
    if tool == "onnxpress":
        import onnx_ir as ir
        import onnxpress

        model = onnxpress.load(path)
        start = time.perf_counter()
        out, _ = onnxpress.optimize(model, "optimize", verify="off")
        seconds = time.perf_counter() - start
        return ir.to_proto(out), seconds
    proto = onnx.load(path)
    start = time.perf_counter()
    with quiet[0], quiet[1]:
        if tool == "onnxslim":
            import onnxslim

            out = onnxslim.slim(proto)
        elif tool == "onnxsim":
            import onnxsim

            out, ok = onnxsim.simplify(proto)
        elif tool == "onnxoptimizer":
            import onnxoptimizer

            out = onnxoptimizer.optimize(proto)
        else:
            raise ValueError(tool)
    return out, time.perf_counter() - start


TOOLS = ["original", "onnxpress", "onnxslim", "onnxsim", "onnxoptimizer"]


def bench_fusion(rounds: int = 8, round_seconds: float = 0.25) -> dict[str, dict[str, Any]]:
    from onnxpress.tools.bench.backends_suite import real_model_cases

    results: dict[str, dict[str, Any]] = {}
    for label, (path, samples) in real_model_cases().items():
        variants: dict[str, dict[str, Any]] = {}
        models: dict[str, onnx.ModelProto] = {}
        for tool in TOOLS:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model, seconds = _transform(tool, str(path))
            except Exception as err:  # a peer failing is a result, not a crash
                variants[tool] = {"error": f"{type(err).__name__}: {str(err)[:120]}"}
                continue
            models[tool] = model
            variants[tool] = {"nodes": len(model.graph.node), "transform_s": seconds}
        reference = [_session(models["original"], 1).run(None, s) for s in samples]
        for tool, model in models.items():
            outs = [_session(model, 1).run(None, s) for s in samples]
            variants[tool]["max_abs_error"] = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) for r, o in zip(reference, outs) for a, b in zip(r, o))
        for threads in (1, 2):
            sessions = {tool: _session(m, threads) for tool, m in models.items()}
            sample = samples[0]
            for session in sessions.values():
                for _ in range(3):
                    session.run(None, sample)
            t0 = time.perf_counter()
            sessions["original"].run(None, sample)
            runs_per_round = max(5, min(200, int(round_seconds / max(time.perf_counter() - t0, 1e-6))))
            times: dict[str, list[float]] = {tool: [] for tool in sessions}
            for _ in range(rounds):  # interleaved rounds: drift hits every variant alike
                for tool, session in sessions.items():
                    for _ in range(runs_per_round):
                        t0 = time.perf_counter()
                        session.run(None, sample)
                        times[tool].append((time.perf_counter() - t0) * 1e3)
            for tool, values in times.items():
                variants[tool][f"ms_{threads}t"] = statistics.median(values)
        results[label] = variants
        print(f"  {label}: " + "; ".join(f"{t} {v.get('nodes')} nodes {v.get('ms_1t', float('nan')):.2f}/{v.get('ms_2t', float('nan')):.2f} ms" for t, v in variants.items()), flush=True)
    return results


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | tool | nodes | transform s | ORT ms 1 thread | ORT ms 2 threads | vs original (1t) | max abs error |", "|---|---|---|---|---|---|---|---|"]
    for label, variants in results.items():
        base = variants["original"].get("ms_1t")
        for tool, v in variants.items():
            if "error" in v:
                lines.append(f"| {label} | {tool} | failed: {v['error']} | | | | | |")
                continue
            ratio = f"{v['ms_1t'] / base:.2f}" if base else ""
            lines.append(f"| {label} | {tool} | {v['nodes']} | {v['transform_s']:.2f} | {v['ms_1t']:.2f} | {v['ms_2t']:.2f} | {ratio} | {v['max_abs_error']:.2g} |")
    return "\n".join(lines)
