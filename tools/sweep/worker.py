"""A local sweep worker: ``python -m onnxpress.tools.sweep.worker JOB.json`` runs one candidate in its own process.

The job file names the model, the data and the sweep directory (a shared path); the outcome is written into the
candidate's folder there, atomically, by the same code the Ray path uses on the driver.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from onnxpress.tools.sweep.evaluate import Outcome, Task, run_candidate
from onnxpress.tools.sweep.store import SweepDir


def write_outcome(store: SweepDir, outcome: Outcome) -> None:
    """Model and report first, ``result.json`` last: a candidate counts as done only once all of it is there."""
    from onnxpress.backends.base import write_atomic

    cid = outcome.result["id"]
    if outcome.model is not None:
        write_atomic(store.folder(cid) / "model.onnx", outcome.model)
    if outcome.report is not None:
        store.write(cid, "report.json", outcome.report)
    if outcome.measure is not None:
        store.write(cid, "measure.json", outcome.measure)
    store.write(cid, "result.json", outcome.result)


def read_samples(path: str | None) -> list[dict[str, np.ndarray]]:
    from onnxpress.frontends.sample_data import NpzSamples

    return list(NpzSamples(path)) if path else []


def save_reference(path: Path, outputs: list[dict[str, Any]]) -> bool:
    """The original model's outputs as ``SAMPLE/OUTPUT`` arrays; False when an output is not a tensor (a sequence
    or map, as ONNX-ML classifiers give), which the workers then compute themselves."""
    arrays = {}
    for i, sample in enumerate(outputs):
        for name, value in sample.items():
            if not isinstance(value, np.ndarray):
                return False
            arrays[f"{i}/{name}"] = value
    import io

    from onnxpress.backends.base import write_atomic

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())
    return True


def load_reference(path: Path, count: int) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        out: list[dict[str, np.ndarray]] = [{} for _ in range(count)]
        for key in data.files:
            index, name = key.split("/", 1)
            out[int(index)][name] = data[key]
    return out


def exit_with_parent() -> None:
    """A worker outlives no driver: when the sweep is killed (even with SIGKILL), its candidates stop too."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main(job_path: str) -> int:
    from onnxpress.tools.sweep.evaluate import run_outputs

    exit_with_parent()
    job = json.loads(Path(job_path).read_text())
    task = Task(**job["task"])
    store = SweepDir(job["root"], {})
    eval_samples = read_samples(job["eval"])
    reference_path = Path(job["root"]) / "reference.npz"
    reference = load_reference(reference_path, len(eval_samples)) if reference_path.exists() else run_outputs(job["model"], eval_samples)
    outcome = run_candidate(task, job["model"], job["calib"], eval_samples, reference)
    write_outcome(store, outcome)
    return 0


def job_payload(task: Task, root: Path, model: str, calib: str, eval_path: str | None) -> dict[str, Any]:
    return {"task": dataclasses.asdict(task), "root": str(root), "model": model, "calib": calib, "eval": eval_path}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
