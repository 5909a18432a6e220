"""What `--cpu portable` costs and what it saves: the same real models quantized for any x86-64 CPU and for
CPUs with VNNI, judged three ways in one run.

- float kernels: onnxruntime with graph optimizations off computes the Q/DQ graph in float (no integer
  kernel), the model's own numbers on any CPU;
- this CPU: ORT_ENABLE_ALL here (its integer kernels; VNNI or not, as the header says);
- emulated AVX2: ORT_ENABLE_ALL on qemu's AVX2 CPU without VNNI (``tools/cpu_emulation.py``), the kernels an
  AMD EPYC Rome or Intel Haswell runs, on the first ``EMULATED`` evaluation samples (emulation is slow).
Latency: this CPU, 1 thread, batch 1, medians of interleaved runs (``quant_suite._latency``). Models, data and
metrics are tools/bench quant's.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

PIPELINES = {"minilm": "auto", "det": "int8", "rec": "int8", "cls": "int8", "orient": "int8", "vad": "int8"}
EMULATED = {"minilm": 48, "det": 2, "rec": 8, "cls": 16, "orient": 8, "vad": 48}


def bench_model(name: str, work: Path) -> dict[str, dict[str, Any]]:
    import onnxpress
    from onnxpress.backends.ort.runner import make_session
    from onnxpress.tools import cpu_emulation
    from onnxpress.tools.bench.quant_suite import _latency, _models, _session

    src, calib, evaluation, metrics = _models()[name]()
    reference = [_session(src).run(None, s)[0] for s in evaluation]
    few = EMULATED[name]
    rows: dict[str, dict[str, Any]] = {}
    sessions = {"float": _session(src)}
    for cpu in ("portable", "vnni"):
        print(f"  {name}: {PIPELINES[name]} --cpu {cpu} ...", flush=True, file=sys.stderr)
        out, report = onnxpress.optimize(str(src), PIPELINES[name], samples=calib, cpu=cpu, verify="off")
        path = work / f"{name}-{cpu}.onnx"
        onnxpress.save(out, path, max_ir_version=10)
        float_kernels = make_session(str(path), optimization="disable", threads=1)
        here = _session(path)
        row: dict[str, Any] = {"mb": path.stat().st_size / 1e6, "weight_max": report.quantization["cpu"]["weight_max"]}
        row["float_kernels"] = metrics(reference, [float_kernels.run(None, s)[0] for s in evaluation])
        row["this_cpu"] = metrics(reference, [here.run(None, s)[0] for s in evaluation])
        if cpu_emulation.emulator() is not None:
            emulated = [outputs[0] for outputs in cpu_emulation.run_emulated(path, evaluation[:few])]
            row["emulated_avx2"] = metrics(reference[:few], emulated)
            row["this_cpu_same_samples"] = metrics(reference[:few], [here.run(None, s)[0] for s in evaluation[:few]])
        rows[cpu] = row
        sessions[cpu] = here
    for label, ms in _latency(sessions, evaluation[0]).items():
        rows.setdefault(label, {})["ms_1t"] = ms
    return rows


def bench_portability(models: tuple[str, ...] = tuple(PIPELINES)) -> dict[str, Any]:
    from onnxpress.irpasses.quant.cpu_target import has_vnni
    from onnxpress.tools import cpu_emulation

    work = Path(tempfile.mkdtemp(prefix="onnxpress-portability-"))
    results = {name: bench_model(name, work) for name in models}
    return {"this_cpu_vnni": has_vnni(), "emulator": bool(cpu_emulation.emulator()), "models": results}


def markdown(results: dict[str, Any]) -> str:
    from onnxpress.tools.bench.quant_suite import TASK

    here = "this CPU (VNNI)" if results["this_cpu_vnni"] else "this CPU (no VNNI)"
    lines = []
    for name, rows in results["models"].items():
        float_ms = rows["float"]["ms_1t"]
        lines += [
            f"\n**{name}** (`{PIPELINES[name]}`; {TASK[name]}; emulated on the first {EMULATED[name]} samples)\n",
            f"| --cpu | weights | MB | float kernels | {here} | emulated AVX2 | {here}, same samples | ms (1t) | vs float |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for cpu in ("portable", "vnni"):
            r = rows[cpu]

            def task(key: str, r: dict[str, Any] = r) -> str:
                m = r.get(key)
                return "—" if m is None else f"{m['task']:.3f} (cos {m['cosine_mean']:.4f})"

            lines.append(
                f"| {cpu} | +-{r['weight_max']} | {r['mb']:.2f} | {task('float_kernels')} | {task('this_cpu')} | {task('emulated_avx2')} | "
                f"{task('this_cpu_same_samples')} | {r['ms_1t']:.2f} | {r['ms_1t'] / float_ms:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    chosen = tuple(sys.argv[1].split(",")) if len(sys.argv) > 1 else tuple(PIPELINES)
    print(markdown(bench_portability(chosen)))
