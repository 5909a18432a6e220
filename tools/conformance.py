"""Conformance harness: ONNX's own node test cases through a model transformation, judged by onnxruntime.

A case counts when onnxruntime passes it on the original model (rtol 1e-3, atol 1e-7 unless the case says
otherwise); the transformation must keep every such case passing. Cases onnxruntime itself fails are
listed with a reason, never skipped silently. ``python -m onnxpress.tools.conformance -p cleanup``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnx

Transform = Callable[[onnx.ModelProto], onnx.ModelProto]


@dataclasses.dataclass
class CaseOutcome:
    name: str
    ok: bool
    reason: str = ""


def node_cases() -> list[Any]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return list(collect_testcases())


def _same(expected: Any, got: Any, rtol: float, atol: float, path: str) -> str | None:
    if expected is None:
        return None if got is None else f"{path}: expected an empty optional"
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return f"{path}: expected a sequence of {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            if (msg := _same(e, g, rtol, atol, f"{path}[{i}]")) is not None:
                return msg
        return None
    e, g = np.asarray(expected), np.asarray(got)
    if e.dtype != g.dtype and not (e.dtype.kind in "OSU" and g.dtype.kind in "OSU"):
        return f"{path}: dtype {g.dtype} != expected {e.dtype}"
    if e.shape != g.shape:
        return f"{path}: shape {g.shape} != expected {e.shape}"
    if e.dtype.kind in "OSU":
        return None if np.array_equal(e.astype(str), g.astype(str)) else f"{path}: strings differ"
    try:
        np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError:
        return f"{path}: values differ beyond rtol={rtol:g} atol={atol:g}"
    except (TypeError, ValueError) as err:
        return f"{path}: cannot compare ({err})"
    return None


def run_on_ort(model: onnx.ModelProto, inputs: list[Any], outputs: list[Any], rtol: float, atol: float) -> str | None:
    """None when onnxruntime reproduces the expected outputs, else the reason."""
    import onnxruntime as ort
    from onnxpress.backends.ort.runner import max_ir_version

    if model.ir_version > max_ir_version():  # stamp what the runtime reads, as our ORT backend does
        restamped = onnx.ModelProto()
        restamped.CopyFrom(model)
        restamped.ir_version = max_ir_version()
        model = restamped
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        return "load: " + (str(err).strip().splitlines() or ["?"])[0][:200]
    initializers = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    feed = {n: (np.asarray(v) if isinstance(v, np.generic) else v) for n, v in zip(names, inputs) if v is not None}
    try:
        got = session.run([o.name for o in model.graph.output], feed)
    except Exception as err:
        return "run: " + (str(err).strip().splitlines() or ["?"])[0][:200]
    for i, (e, g) in enumerate(zip(outputs, got)):
        if (msg := _same(e, g, rtol, atol, f"output {i}")) is not None:
            return "mismatch: " + msg
    return None


def _tolerances(case: Any) -> tuple[float, float]:
    return float(case.rtol if case.rtol is not None else 1e-3), float(case.atol if case.atol is not None else 1e-7)


def ort_baseline(cases: Iterable[Any]) -> dict[str, str | None]:
    """Per case: None if onnxruntime passes every data set, else why not."""
    baseline: dict[str, str | None] = {}
    for case in cases:
        rtol, atol = _tolerances(case)
        reason = None
        for inputs, outputs in case.data_sets:
            reason = run_on_ort(case.model, list(inputs), list(outputs), rtol, atol)
            if reason:
                break
        baseline[case.name] = reason
    return baseline


def check_transform(cases: Iterable[Any], baseline: dict[str, str | None], transform: Transform) -> list[CaseOutcome]:
    """Run ``transform`` on every case onnxruntime passes; an outcome is not ok when the case stops passing."""
    outcomes = []
    for case in cases:
        if baseline.get(case.name) is not None:
            continue
        rtol, atol = _tolerances(case)
        try:
            model = transform(case.model)
        except Exception as err:
            outcomes.append(CaseOutcome(case.name, False, f"transform raised {type(err).__name__}: {err}"))
            continue
        reason = None
        for inputs, outputs in case.data_sets:
            reason = run_on_ort(model, list(inputs), list(outputs), rtol, atol)
            if reason:
                break
        outcomes.append(CaseOutcome(case.name, reason is None, reason or ""))
    return outcomes


def roundtrip(model: onnx.ModelProto) -> onnx.ModelProto:
    """load -> IR -> save, as bytes."""
    import onnx_ir as ir
    import onnxpress

    return onnx.ModelProto.FromString(ir.to_proto(onnxpress.load(model.SerializeToString())).SerializeToString())


def pipeline_transform(pipeline: str, target: str | None = None) -> Transform:
    import onnxpress

    def transform(model: onnx.ModelProto) -> onnx.ModelProto:
        out, _ = onnxpress.optimize(model, pipeline, verify="off", target=target)
        return out

    return transform


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--pipeline", help="pipeline to check (default: load/save round trip only)")
    parser.add_argument("--target", help="target backend the passes may emit for (e.g. ort)")
    parser.add_argument("--list-ort-failures", action="store_true", help="print onnxruntime's own failures")
    args = parser.parse_args(argv)
    cases = node_cases()
    baseline = ort_baseline(cases)
    passing = [n for n, r in baseline.items() if r is None]
    print(f"{len(cases)} node cases; onnxruntime passes {len(passing)}, fails {len(cases) - len(passing)}")
    if args.list_ort_failures:
        for name, reason in sorted(baseline.items()):
            if reason:
                print(f"{name}\t{reason}")
    transform = pipeline_transform(args.pipeline, args.target) if args.pipeline else roundtrip
    outcomes = check_transform(cases, baseline, transform)
    broken = [o for o in outcomes if not o.ok]
    print(f"{args.pipeline or 'round trip'}: {len(outcomes) - len(broken)}/{len(outcomes)} preserved")
    for o in broken:
        print(f"  BROKEN {o.name}: {o.reason}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
