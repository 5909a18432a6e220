"""tools/bench compress: weight clustering and entropy coding on MiniLM and PP-OCRv4 det/rec, against the
uniform weight-only pipelines.

Every pipeline runs on the same calibration samples and is judged on held-out ones with the model's task
metric (MiniLM: retrieval agreement with the float model; det: IoU of the text mask; rec: character
agreement of the CTC decode); file size from the saved model (IR capped for onnxruntime) against the float
file. Each output is then entropy-coded (lossless, ``entropy-code{min_saving=0}``) to show what the coder
saves over the stored (packed) indices. For ``max-compress`` on MiniLM: load time of the packed file through
onnxpress (decode + session) against the float file's session, and the decoder's throughput on its blobs.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

UNIFORM = "convert-opset{min=21},optimize,cluster{grid=uniform,bits=8,step=0.1},entropy-code"
LOOSER = 'convert-opset{{min=21}},optimize,cluster{{grid=uniform,bits=8,fidelity="cosine>={}",eval_samples=8}},entropy-code'
PIPELINES: dict[str, list[tuple[str, str]]] = {
    "minilm": [
        ("max-compress (uniform grid, per-layer steps by fidelity cosine>=0.999, entropy-coded)", "max-compress"),
        ("max-compress at cosine>=0.998", LOOSER.format(0.998)),
        ("max-compress at cosine>=0.99", LOOSER.format(0.99)),
        ("uniform grid step 0.1, entropy-coded", UNIFORM),
        ("cluster4 (k-means 4-bit per column)", "cluster4"),
        ("cluster 4-bit, a book per 8 columns", "convert-opset{min=21},optimize,cluster{bits=4,scope=group:8}"),
        ("cluster 8-bit (k-means per tensor)", "convert-opset{min=21},optimize,cluster{bits=8}"),
        ("w4 (uniform 4-bit blocks, GPTQ)", "w4"),
        ("w8", "w8"),
    ],
    "det": [
        ("max-compress", "max-compress"),
        ("uniform grid step 0.1, entropy-coded", UNIFORM),
        ("cluster4", "cluster4"),
    ],
    "rec": [
        ("max-compress", "max-compress"),
        ("uniform grid step 0.1, entropy-coded", UNIFORM),
        ("cluster4", "cluster4"),
    ],
}


def bench_compress(models: tuple[str, ...] = ("minilm", "det", "rec")) -> dict[str, Any]:
    from onnxpress.tools.bench.quant_suite import _models

    out: dict[str, Any] = {}
    for name in models:
        path, calibration, held_out, metrics = _models()[name]()
        if name == "det":
            from onnxpress.tools import real_models as R

            pages = R.text_pages(20, seed=0)
            calibration, held_out = pages[:16], pages[16:]  # the step search fits on 8 and judges on 8; 4 held out
        out[name] = _bench_model(name, path, calibration, held_out, metrics)
    return out


def _bench_model(name: str, source: Any, calibration: list, held_out: list, metrics: Callable) -> dict[str, Any]:
    import onnxpress
    from onnxpress.backends.ort.runner import make_session

    reference = make_session(onnxpress.load(str(source)), optimization="all", threads=1)
    expected = [reference.run(None, s)[0] for s in held_out]
    float_bytes = os.path.getsize(source)
    rows, extra = [], {}
    for label, pipeline in PIPELINES[name]:
        start = time.perf_counter()
        model, report = onnxpress.optimize(onnxpress.load(str(source)), pipeline, samples=calibration, verify="off")
        seconds = time.perf_counter() - start
        stats = {r.name: r.stats for r in report.records if r.name in ("cluster", "entropy-code", "weight-only")}
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.onnx")
            onnxpress.save(model, path, max_ir_version=13)
            size = os.path.getsize(path)
            session = make_session(onnxpress.load(path), optimization="all", threads=1)
            got = [session.run(None, s)[0] for s in held_out]
            packed_size, saving = _entropy_coded(path, folder)
            if name == "minilm" and pipeline == "max-compress":
                extra = {"load": _load_times(str(source), path), "decode": _decode_speed(path)}
        if name == "minilm" and pipeline == LOOSER.format(0.998):
            from onnxpress.tools.bench.compress_bound import entropy_bound

            extra["bound"] = entropy_bound(str(source), calibration, pipeline)
        row = {"pipeline": label, "spec": pipeline, "bytes": size, "ratio": float_bytes / size, "packed_bytes": packed_size,
               "packed_ratio": float_bytes / packed_size, "entropy_saving": saving, "seconds": seconds, "stats": stats,
               **metrics(expected, got)}
        rows.append(row)
        print(f"{name} {label}: {row['ratio']:.2f}x ({size / 1e6:.2f} MB; entropy-coded {row['packed_ratio']:.2f}x, "
              f"saving {saving:.1%} of the coded tensors), task {row['task']:.4f}, cosine {row['cosine_mean']:.4f}, "
              f"{seconds:.1f} s", flush=True)
    return {"float_bytes": float_bytes, "rows": rows, **extra}


def _entropy_coded(path: str, folder: str) -> tuple[int, float]:
    """(file size after entropy-code{min_saving=0}, share of the coded tensors' stored bytes it saved)."""
    import onnxpress

    model, report = onnxpress.optimize(onnxpress.load(path), "entropy-code{min_saving=0}", verify="off")
    stats = report.records[-1].stats
    packed = os.path.join(folder, "packed.onnx")
    onnxpress.save(model, packed, max_ir_version=13)
    before, after = stats.get("bytes_before", 0), stats.get("bytes_after", 0)
    return os.path.getsize(packed), (1 - after / before) if before else 0.0


def _load_times(float_path: str, packed_path: str, repeats: int = 5) -> dict[str, float]:
    """Median seconds, interleaved: the float file into an onnxruntime session, and the packed file through
    onnxpress.load (decoding its blobs) into one."""
    import onnxpress
    from onnxpress.backends.ort.runner import make_session

    times: dict[str, list[float]] = {"float": [], "packed": []}
    for _ in range(repeats):
        start = time.perf_counter()
        make_session(float_path, optimization="all", threads=1)
        times["float"].append(time.perf_counter() - start)
        start = time.perf_counter()
        make_session(onnxpress.load(packed_path), optimization="all", threads=1)
        times["packed"].append(time.perf_counter() - start)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    return {**medians, "ratio": medians["packed"] / medians["float"]}


def _decode_speed(packed_path: str, repeats: int = 3) -> dict[str, float]:
    """The native decoder over every blob of the packed file, one thread: symbols per second, and the bytes
    per second of the float32 weights those symbols stand for."""
    import onnx
    from onnx import numpy_helper
    from onnxpress.kernels.formats import decode

    model = onnx.load(packed_path)
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith(("_opxw", "_opxw_table"))}
    jobs = []
    for node in model.graph.node:
        if node.op_type == "DecodeWeights":
            shape = tuple(next(a.ints for a in node.attribute if a.name == "shape"))
            jobs.append((arrays[node.input[0]], arrays[node.input[1]], shape))
    symbols = sum(int(np.prod(shape)) for _, _, shape in jobs)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for blob, table, shape in jobs:
            decode(blob, table, shape)
        best = min(best, time.perf_counter() - start)
    return {"symbols": symbols, "seconds": best, "msymbols_per_s": symbols / best / 1e6, "fp32_gb_per_s": 4 * symbols / best / 1e9}


def plot(results: dict[str, Any], folder: Any) -> str:
    """Size against task fidelity per model (``compress.png``); skipped without matplotlib."""
    from pathlib import Path

    from onnxpress.irpasses.core.errors import BackendUnavailableError
    from onnxpress.tools.plot import plot_size_fidelity

    try:
        return str(plot_size_fidelity(results, Path(folder) / "compress.png"))
    except BackendUnavailableError as err:
        return f"not drawn ({err.message})"


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for name, result in results.items():
        lines += [f"\n{name} (float {result['float_bytes'] / 1e6:.1f} MB)\n",
                  "| pipeline | x smaller | MB | entropy-coded x | coder saving | task metric | cosine mean | transform s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result["rows"]:
            lines.append(f"| {r['pipeline']} | {r['ratio']:.2f} | {r['bytes'] / 1e6:.2f} | {r['packed_ratio']:.2f} | "
                         f"{r['entropy_saving']:.1%} | {r['task']:.4f} | {r['cosine_mean']:.4f} | {r['seconds']:.1f} |")
        if "load" in result:
            load, decode = result["load"], result["decode"]
            lines.append(f"\nload: float {load['float']:.3f} s, packed (decode + session) {load['packed']:.3f} s = {load['ratio']:.2f}x; "
                         f"decoder {decode['msymbols_per_s']:.0f} M symbols/s = {decode['fp32_gb_per_s']:.2f} GB/s of fp32 weights")
        if "bound" in result:
            bound = result["bound"]
            lines.append(f"\nmax-compress at cosine>=0.998: codes {bound['code_bits']:.2f} bits/weight; Shannon lower bound at the same "
                         f"per-layer error {bound['bound_bits']:.2f} bits/weight")
    return "\n".join(lines)
