"""tools/bench compress: weight clustering on all-MiniLM-L6-v2 against the uniform weight-only pipelines.

Each pipeline runs on the same 32 calibration sentences and is judged on 320 held-out ones (retrieval
agreement with the float model: the nearest other sentence stays the same; embedding cosine), file size from
the saved model (IR capped for onnxruntime), transform time in-process. First version for issue 17: no
entropy coding, no pruning stage yet.
"""

from __future__ import annotations

import os
import tempfile
import time

PIPELINES = [
    ("cluster4", "cluster4"),
    ("cluster 4-bit + fidelity cosine>=0.9994", 'convert-opset{min=21},optimize,cluster{bits=4,fidelity="cosine>=0.9994",eval_samples=8}'),
    ("cluster 8-bit", "convert-opset{min=21},optimize,cluster{bits=8}"),
    ("cluster 4-bit, tables only", "convert-opset{min=21},optimize,cluster{bits=4,exclude=[MatMul]}"),
    ("w4 (uniform 4-bit blocks, GPTQ)", "w4"),
    ("w8", "w8"),
]


def bench_compress() -> list[dict[str, object]]:
    import onnxpress
    from onnxpress.backends.ort.runner import make_session
    from onnxpress.tools import real_models as R
    from onnxpress.tools.bench.quant_suite import minilm_metrics

    source = R.minilm_onnx()
    calibration = R.minilm_samples(R.sentences(32, offset=0))
    held_out = R.minilm_samples(R.sentences(320, offset=300))
    reference = make_session(onnxpress.load(str(source)), optimization="all", threads=1)
    expected = [reference.run(None, s)[0] for s in held_out]
    float_bytes = os.path.getsize(source)
    rows = []
    for label, pipeline in PIPELINES:
        start = time.perf_counter()
        model, report = onnxpress.optimize(onnxpress.load(str(source)), pipeline, samples=calibration, verify="off")
        seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.onnx")
            onnxpress.save(model, path, max_ir_version=13)
            size = os.path.getsize(path)
            session = make_session(path, optimization="all", threads=1)
            got = [session.run(None, s)[0] for s in held_out]
        metrics = minilm_metrics(expected, got)
        row = {"pipeline": label, "spec": pipeline, "bytes": size, "ratio": float_bytes / size, "seconds": seconds,
               "stats": report.records[-1].stats, **metrics}
        rows.append(row)
        print(f"{label}: {row['ratio']:.2f}x ({size / 1e6:.1f} MB), retrieval {metrics['task']:.3f}, cosine mean "
              f"{metrics['cosine_mean']:.4f} min {metrics['cosine_min']:.4f}, {seconds:.1f} s", flush=True)
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| pipeline | x smaller | MB | retrieval agreement | cosine mean | cosine min | transform s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pipeline']} | {r['ratio']:.2f} | {int(r['bytes']) / 1e6:.1f} | {r['task']:.3f} | {r['cosine_mean']:.4f} | "
                     f"{r['cosine_min']:.4f} | {r['seconds']:.1f} |")
    return "\n".join(lines)
