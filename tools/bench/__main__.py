"""tools/bench: reproducible benchmarks, peers measured in the same run.

``python -m onnxpress.tools.bench fusion`` -- ``-p optimize`` vs onnxslim, onnxsim, onnxoptimizer on the real
models: nodes, transform time, ORT latency at 1 and 2 threads, output error.

``python -m onnxpress.tools.bench backends`` -- ORT vs OpenVINO latency and agreement on the real models,
TensorRT engine builds (TensorRT-RTX on CPU machines).

``python -m onnxpress.tools.bench kernels`` -- our SparseMatMul / LutMatMul / DecodeWeights against onnxruntime's
MatMul and MatMulNBits, and MiniLM with 2:4 FFN weights end to end.

``python -m onnxpress.tools.bench compress`` -- clustering + entropy coding on MiniLM, PP-OCRv4 det/rec against weight-only.

``python -m onnxpress.tools.bench sparsity`` -- channel permutation vs apex's case, one-shot 2:4 (magnitude / Wanda /
SparseGPT, +- permutation) on MiniLM and det/rec, and MiniLM latency of sparse-2of4 / sparse-int8 vs float / int8.

``python -m onnxpress.tools.bench sweep`` -- ``onnxpress sweep`` on det and MiniLM: serial vs 2 local workers vs a
2-worker Ray cluster (transform+fidelity wall time), identical results, the Pareto front with latencies.

``python -m onnxpress.tools.bench unseen [--no-latency]`` -- int8 on real models never tuned on (magika, NudeNet
YOLOv8n) against onnxruntime's quantizers; fidelity with ORT optimizations off and on, three calibration sets.

``python -m onnxpress.tools.bench unseen_compress`` -- pruning and low rank (sparse-2of4, 2:4 everywhere, sparse-int8,
lowrank-auto, MACs budgets, lowrank-int8) on the same unseen models: held-out fidelity, params / MACs removed, latency.

``python -m onnxpress.tools.bench portability`` -- `--cpu portable` against `--cpu vnni` on the quant suite's
models: task metric with float kernels, with this CPU's integer kernels, and on qemu's AVX2 CPU without VNNI.

``python -m onnxpress.tools.bench io`` -- load -> cleanup -> save on a generated 1.2 GB / 12.7k-node model
with external data, against raw onnx, onnx-graphsurgeon and onnxslim: wall time and peak RSS per process.
Results go to ``bench-out/`` (JSON) and are printed as a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


@functools.cache
def _compile_bytecode() -> None:
    """Byte-compile onnxpress once before timing whole processes, as installing a wheel would (pip compiles
    what it installs; the peers' packages are compiled): an editable install under PYTHONDONTWRITEBYTECODE=1
    otherwise recompiles ~70 of our modules in every timed process (~0.1 s)."""
    import compileall

    import onnxpress

    root = Path(onnxpress.__file__).parent  # the repository itself (the virtual environment may sit inside)
    compileall.compile_file(str(root / "__init__.py"), quiet=1)
    for package in ("irpasses", "frontends", "backends", "kernels", "tools"):
        compileall.compile_dir(str(root / package), quiet=1)


def run_measured(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB, from the kernel's accounting of that child alone) and exit code."""
    import tempfile

    _compile_bytecode()

    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty child must never block on it
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-2000:])
    return wall, usage.ru_maxrss / 1024, proc.returncode


def bench_io(out: Path, repeats: int, blocks: int) -> dict[str, object]:
    from onnxpress.tools.bench.bigmodel import generate

    work = out / "io-work"
    shutil.rmtree(work, ignore_errors=True)
    src = work / "in" / "big.onnx"
    info = generate(src, blocks=blocks)
    print(f"generated {src}: {info['nodes']} nodes, {info['weight_bytes'] / 1e9:.2f} GB of weights", flush=True)
    rows: dict[str, list[tuple[float, float, int]]] = {}
    tools = ["onnxpress", "onnx", "onnx-graphsurgeon", "onnxslim"]
    for rep in range(repeats):  # interleaved: A B C D A B C D, so drift hits every tool alike
        for tool in tools:
            dst = work / f"out-{tool}" / "big.onnx"
            shutil.rmtree(dst.parent, ignore_errors=True)
            dst.parent.mkdir(parents=True)
            result = run_measured([sys.executable, "-m", "onnxpress.tools.bench.io_cases", tool, str(src), str(dst)])
            rows.setdefault(tool, []).append(result)
            print(f"  rep {rep + 1} {tool:<18} {result[0]:7.2f} s  {result[1]:8.0f} MiB  rc={result[2]}", flush=True)
    summary = {}
    for tool, results in rows.items():
        ok = [r for r in results if r[2] == 0]
        summary[tool] = {
            "wall_s_median": statistics.median(r[0] for r in ok) if ok else None,
            "peak_rss_mib_median": statistics.median(r[1] for r in ok) if ok else None,
            "runs": [{"wall_s": r[0], "peak_rss_mib": r[1], "rc": r[2]} for r in results],
        }
    shutil.rmtree(work, ignore_errors=True)
    return {"model": info, "results": summary}


def machine() -> dict[str, object]:
    import onnx
    import onnxruntime

    return {
        "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "cpus": os.cpu_count(),
        "platform": platform.platform(), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    suites = [
        "io", "backends", "fusion", "quant", "kernels", "compress", "lowrank", "sparsity", "fuzz", "sweep", "frontends",
        "unseen", "unseen_compress", "portability",
    ]
    parser.add_argument("suite", nargs="?", default="io", choices=suites)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=4096, help="model size: 4096 blocks = 12.7k nodes, 1.22 GB")
    parser.add_argument("--models", help="quant suite: a comma-separated subset of minilm,det,rec,cls,orient; lowrank: of "
                        "minilm,det,rec; unseen and unseen_compress: of magika,nudenet")
    parser.add_argument("--no-latency", action="store_true", help="unseen suite: skip latency (sets ONNXPRESS_BENCH_LATENCY=0)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.no_latency:
        os.environ["ONNXPRESS_BENCH_LATENCY"] = "0"
    if args.suite != "io":
        module = importlib.import_module(f"onnxpress.tools.bench.{args.suite}_suite")
        run = getattr(module, f"bench_{args.suite}")
        subsets = ("quant", "compress", "sparsity", "sweep", "unseen", "portability", "unseen_compress", "lowrank")
        rows = run(tuple(args.models.split(","))) if args.suite in subsets and args.models else run()
        (args.out / f"{args.suite}.json").write_text(json.dumps({"machine": machine(), args.suite: rows}, indent=2))
        print("\n" + module.markdown(rows))
        if hasattr(module, "plot"):
            print(f"plot: {module.plot(rows, args.out)}")
        return 0
    result = {"machine": machine(), "io": bench_io(args.out, args.repeats, args.blocks)}
    (args.out / "io.json").write_text(json.dumps(result, indent=2))
    io = result["io"]
    weight_mib = io["model"]["weight_bytes"] / 2**20
    ref = io["results"]["onnxslim"]["wall_s_median"]
    print("\n| tool | wall s (median) | peak RSS MiB (median) | RSS / weight bytes | time / onnxslim |")
    print("|---|---|---|---|---|")
    for tool, r in io["results"].items():
        if r["wall_s_median"] is None:
            print(f"| {tool} | failed | | | |")
            continue
        ratio = f"{r['wall_s_median'] / ref:.2f}" if ref else "n/a"
        print(f"| {tool} | {r['wall_s_median']:.2f} | {r['peak_rss_mib_median']:.0f} | {r['peak_rss_mib_median'] / weight_mib:.3f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
