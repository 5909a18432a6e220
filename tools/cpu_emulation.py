"""Run onnxruntime on an emulated CPU without VNNI, to check what a model computes on AVX2-only machines.

onnxruntime picks its integer kernels by CPUID when it loads. Under qemu's user-mode emulator with ``-cpu max``
(QEMU 7.2's TCG: AVX2, no AVX-512, no VNNI; Debian's ``qemu-user``) it takes the same AVX2 ``vpmaddubsw`` path
an AMD EPYC Rome or an Intel Haswell takes, with its int16 saturation, whatever the host has. Only the numbers
mean anything there: emulated timings are not a CPU's.

    python -m onnxpress.tools.cpu_emulation MODEL.onnx INPUTS.npz OUTPUTS.npz

runs every sample of INPUTS (array "I:NAME": input NAME of sample I) through the model at ORT_ENABLE_ALL,
1 thread, and writes its outputs to OUTPUTS ("I:J": output J of sample I); ``run_emulated`` does it from Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

QEMU_CPU = "max"
"""QEMU 7.2's TCG supports AVX2 but neither AVX-512 nor VNNI; numpy inside reports exactly AVX and AVX2."""


def emulator() -> str | None:
    """Path of qemu's x86-64 user-mode emulator, or None (``apt-get install qemu-user``)."""
    return shutil.which("qemu-x86_64")


def emulated_command(argv: Sequence[str]) -> list[str]:
    """``argv`` (a Python command) as it runs on the emulated CPU."""
    qemu = emulator()
    if qemu is None:
        raise RuntimeError("qemu-x86_64 is not installed (Debian: apt-get install qemu-user)")
    return [qemu, "-cpu", QEMU_CPU, *argv]


def run_emulated(
    model: str | os.PathLike[str], samples: Sequence[Mapping[str, np.ndarray]], timeout: float = 1800
) -> list[list[np.ndarray]]:
    """Per sample, the model's outputs from onnxruntime on the emulated CPU."""
    with tempfile.TemporaryDirectory(prefix="onnxpress-emulated-") as tmp:
        inputs, outputs = Path(tmp, "inputs.npz"), Path(tmp, "outputs.npz")
        np.savez(inputs, **{f"{i}:{name}": np.asarray(array) for i, sample in enumerate(samples) for name, array in sample.items()})
        command = emulated_command([sys.executable, "-m", "onnxpress.tools.cpu_emulation", os.fspath(model), str(inputs), str(outputs)])
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            tail = [line for line in done.stderr.splitlines() if "TCG doesn't support" not in line][-5:]
            raise RuntimeError(f"onnxruntime under {' '.join(command[:3])} failed: " + " | ".join(tail))
        with np.load(outputs) as data:
            found: dict[int, dict[int, np.ndarray]] = {}
            for key in data.files:
                i, j = key.split(":")
                found.setdefault(int(i), {})[int(j)] = data[key]
        return [[found[i][j] for j in sorted(found[i])] for i in range(len(samples))]


def emulated_features() -> dict[str, bool]:
    """numpy's CPU features as seen on the emulated CPU (a check that the emulation hides VNNI)."""
    code = "import json; from onnxpress.irpasses.quant.cpu_target import cpu_features as f; print(json.dumps(f()))"
    done = subprocess.run(emulated_command([sys.executable, "-c", code]), capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run(model: str, inputs: str, outputs: str) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    from onnxpress.backends.ort.runner import model_source

    with model_source(model) as source:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    feeds: dict[int, dict[str, np.ndarray]] = {}
    with np.load(inputs) as data:
        for key in data.files:
            i, name = key.split(":", 1)
            feeds.setdefault(int(i), {})[name] = data[key]
    results = {f"{i}:{j}": out for i in sorted(feeds) for j, out in enumerate(session.run(None, feeds[i]))}
    np.savez(outputs, **results)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: python -m onnxpress.tools.cpu_emulation MODEL.onnx INPUTS.npz OUTPUTS.npz")
    _run(*sys.argv[1:])
