"""Fuzzing onnxpress with mutated real models and sample files (issue 20).

Seeds are real models found through installed packages and the small models the ``onnx`` package ships
for its backend tests; each case is one mutation (see ``mutate``), run in a worker process through load,
``cleanup``, ``optimize``, ``onnxpress inspect`` and ``onnxpress compare`` with a time limit. Every exception
that is not an ``OnnxpressError`` (a leak), every exit-1 error (internal), every print that bypasses
logging/warnings, every hang and every crash is a finding, saved with its input for replay::

    python -m onnxpress.tools.fuzz models --count 300 --out bench-out/fuzz
    python -m onnxpress.tools.fuzz replay bench-out/fuzz/leak-1a2b3c4d5e.onnx
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import multiprocessing
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx

FINDINGS = ("leak", "internal", "stray-output", "hang", "crash")
FAILURES = ("internal", "leak", "stray-output", "hang", "crash")
"""What counts against onnxpress: an exit-1 internal error (a pass failing on an odd but loadable model, which
the input should have been refused for or carried through), any exception that is not an OnnxpressError, an
unasked print, a hang or a crash. The 10,000-model run of 2026-12-02 had none."""


def corpus_models(max_bytes: int = 50_000) -> list[Path]:
    """The small test models shipped inside the ``onnx`` package (node tests where the wheel has them)."""
    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    return sorted(p for p in root.glob("*/*/model.onnx") if p.stat().st_size <= max_bytes)


def real_models(include_large: bool = False) -> list[Path]:
    """The real models the benchmarks use, where their packages are installed (MiniLM only if asked: 90 MB)."""
    from onnxpress.tools import real_models as R

    finders = [lambda: R.rapidocr_model("det"), lambda: R.rapidocr_model("rec"), lambda: R.rapidocr_model("cls"),
               R.silero_vad_model, R.orientation_model]
    if include_large:
        finders.append(R.minilm_onnx)
    found = [Path(__file__).parents[1] / "models" / "ch_PP-OCRv4_det_infer.onnx"]
    for find in finders:
        try:
            found.append(find())
        except Exception:  # the package (a test extra) is not installed
            continue
    return [p for p in dict.fromkeys(found) if p.is_file()]


@dataclasses.dataclass
class Report:
    """Counts per verdict, the findings with their saved inputs, and the refusal messages seen."""

    kind: str
    cases: int = 0
    seconds: float = 0.0
    verdicts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    by_mutation: dict[str, collections.Counter[str]] = dataclasses.field(default_factory=dict)
    findings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    refusals: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def bad(self) -> int:
        return sum(self.verdicts[v] for v in FAILURES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "cases": self.cases, "seconds": round(self.seconds, 1), "verdicts": dict(self.verdicts),
            "by_mutation": {k: dict(v) for k, v in sorted(self.by_mutation.items())}, "findings": self.findings,
            "refusals": dict(self.refusals.most_common(40)),
        }


def _shape(message: str) -> str:
    """A refusal message with names and numbers blanked, to count kinds of refusal rather than cases."""
    return re.sub(r"'[^']*'|\d+", "#", message)[:160]


class _Worker:
    """A child process answering cases; replaced after a hang or a crash."""

    def __init__(self, memory_limit_gib: float) -> None:
        from onnxpress.tools.fuzz.worker import serve

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, memory_limit_gib), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(300) or self.conn.recv() != "ready":
            self.stop()
            raise RuntimeError("the fuzz worker did not start")

    def ask(self, message: tuple[Any, ...], timeout: float) -> dict[str, Any]:
        self.conn.send(message)
        if not self.conn.poll(timeout):
            return {"verdict": "hang", "detail": f"no answer within {timeout:g} s"}
        try:
            return self.conn.recv()
        except (EOFError, ConnectionResetError):
            self.process.join(5)
            return {"verdict": "crash", "detail": f"worker died, exit code {self.process.exitcode}"}

    def stop(self) -> None:
        self.process.kill()
        self.process.join(10)
        self.conn.close()


def _record(report: Report, mutation: str, result: dict[str, Any], data: bytes, out: Path | None, suffix: str) -> None:
    verdict = result["verdict"]
    report.cases += 1
    report.verdicts[verdict] += 1
    report.by_mutation.setdefault(mutation, collections.Counter())[verdict] += 1
    if verdict == "refused":
        report.refusals[_shape(result.get("refusal", ""))] += 1
    if verdict not in FINDINGS:
        return
    name = f"{verdict}-{hashlib.sha1(data).hexdigest()[:10]}{suffix}"
    finding = {"file": name, "mutation": mutation, **{k: v for k, v in result.items() if k != "verdict"}, "verdict": verdict}
    report.findings.append(finding)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
        (out / f"{name}.json").write_text(json.dumps(finding, indent=2, default=str))


def _run(kind: str, cases: Iterator[tuple[str, tuple[Any, ...], bytes]], timeout: float, out: Path | None,
         memory_limit_gib: float, suffix: str) -> Report:
    report = Report(kind)
    start = time.perf_counter()
    worker = _Worker(memory_limit_gib)
    try:
        for mutation, message, data in cases:
            result = worker.ask(message, timeout)
            if result["verdict"] in ("hang", "crash"):
                worker.stop()
                worker = _Worker(memory_limit_gib)
            _record(report, mutation, result, data, out, suffix)
    finally:
        worker.stop()
    report.seconds = time.perf_counter() - start
    return report


def model_cases(seeds: list[Path], count: int, seed: int) -> Iterator[tuple[str, tuple[Any, ...], bytes]]:
    """``count`` mutated models, deterministic in ``seed``: (mutation, message for the worker, bytes)."""
    from onnxpress.tools.fuzz.mutate import mutate_model

    rng = random.Random(seed)
    loaded: dict[Path, tuple[onnx.ModelProto, bytes]] = {}
    for _ in range(count):
        path = rng.choice(seeds)
        if path not in loaded:
            data = path.read_bytes()
            loaded[path] = (onnx.load_model_from_string(data), data)
        mutation, data = mutate_model(*loaded[path], rng)
        yield f"{mutation}", ("model", data), data


def fuzz_models(count: int = 300, seed: int = 0, seeds: list[Path] | None = None, timeout: float = 20.0,
                out: Path | None = None, memory_limit_gib: float = 8.0) -> Report:
    """Run ``count`` mutated models; findings are saved under ``out`` when given."""
    return _run("models", model_cases(seeds or corpus_models(), count, seed), timeout, out, memory_limit_gib, ".onnx")


def sample_cases(model_path: Path, count: int, seed: int) -> Iterator[tuple[str, tuple[Any, ...], bytes]]:
    """``count`` damaged .npz files for ``model_path``, deterministic in ``seed``."""
    import numpy as np
    import onnxpress
    from onnxpress.frontends.sample_data import random_inputs
    from onnxpress.tools.fuzz.mutate import mutate_samples

    model = onnxpress.load(model_path)
    rows = random_inputs(model, count=3, seed=seed)
    arrays = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
    rng = random.Random(seed)
    for _ in range(count):
        mutation, data = mutate_samples(arrays, rng)
        yield mutation, ("samples", data, str(model_path)), data


def sample_model() -> Path:
    """A small float-input model for the sample-file fuzzing: the first of the corpus with float inputs only."""
    for path in corpus_models():
        proto = onnx.load(path)
        inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
        if inputs and all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in inputs):
            return path
    raise FileNotFoundError("no float-input model in the onnx test corpus")


def fuzz_samples(count: int = 100, seed: int = 0, model_path: Path | None = None, timeout: float = 20.0,
                 out: Path | None = None, memory_limit_gib: float = 8.0) -> Report:
    """Run ``count`` damaged sample files through NpzSamples, validation and ``onnxpress compare --inputs``."""
    model_path = model_path or sample_model()
    return _run("samples", sample_cases(model_path, count, seed), timeout, out, memory_limit_gib, ".npz")


def replay(path: Path, model_path: Path | None = None) -> dict[str, Any]:
    """Run one saved case again in this process (a .onnx model or an .npz sample file)."""
    import tempfile

    from onnxpress.tools.fuzz.worker import check_model, check_samples

    with tempfile.TemporaryDirectory() as tmp:
        if path.suffix == ".npz":
            return check_samples(path.read_bytes(), model_path or sample_model(), Path(tmp))
        return check_model(path.read_bytes(), Path(tmp))
