"""Per-layer sensitivity and mixed precision: keep the layers that hurt most in float until a fidelity target holds.

Sensitivity of a layer = the fidelity of the model with only that layer quantized (the per-layer analysis of
ModelOpt/AIMET). Layers are then kept float most-sensitive first; the smallest such set that meets the target
is found by bisection over the ranked list (fidelity is close to monotone in it), so a model with n layers
costs n + log2(n) evaluations on the evaluation samples, each an onnxruntime session on a cheap clone.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.snapshot import snapshot

Outputs = list[dict[str, np.ndarray]]
Metric = Callable[[Outputs, Outputs], float]
"""(float reference outputs, candidate outputs) per sample -> a score, higher is better."""


def cosine(reference: Outputs, candidate: Outputs) -> float:
    """Worst cosine similarity over samples and outputs (outputs flattened)."""
    worst = 1.0
    for ref, got in zip(reference, candidate):
        for name, r in ref.items():
            a, b = np.asarray(r, np.float64).ravel(), np.asarray(got[name], np.float64).ravel()
            denom = np.linalg.norm(a) * np.linalg.norm(b)
            worst = min(worst, float(a @ b / denom) if denom else float(np.array_equal(a, b)))
    return worst


def neg_max_abs(reference: Outputs, candidate: Outputs) -> float:
    return -max(float(np.max(np.abs(np.asarray(r) - np.asarray(got[n])))) for ref, got in zip(reference, candidate) for n, r in ref.items())


METRICS: dict[str, Metric] = {"cosine": cosine, "max_abs": neg_max_abs}
_FIDELITY = re.compile(r"^\s*(cosine|max_abs)\s*(>=|<=)\s*([0-9.eE+-]+)\s*$")


def parse_fidelity(text: str) -> tuple[Metric, float, str]:
    """'cosine>=0.995' or 'max_abs<=0.01' -> (metric, threshold on the metric's higher-is-better scale, text)."""
    match = _FIDELITY.match(text)
    if not match:
        raise PassOptionError(f"fidelity target {text!r} is not understood", hint="write e.g. 'cosine>=0.995' or 'max_abs<=0.01'")
    name, op, number = match.groups()
    value = float(number)
    if (name == "cosine") != (op == ">="):
        raise PassOptionError(f"fidelity target {text!r}: use cosine>=X or max_abs<=X")
    return METRICS[name], (value if name == "cosine" else -value), text.strip()


@dataclasses.dataclass
class LayerScore:
    node: str
    op_type: str
    score: float
    """Fidelity with only this layer quantized."""
    kept_float: bool = False


@dataclasses.dataclass
class MixedPrecisionResult:
    float_layers: set[str]
    table: list[LayerScore]
    fidelity: float
    met: bool
    evaluations: int


def _run(model: ir.Model, samples: Sequence[Mapping[str, np.ndarray]]) -> Outputs:
    from onnxpress.backends.ort.runner import make_session, run_session

    session = make_session(model)
    return [run_session(session, s) for s in samples]


def search(
    model: ir.Model,
    ctx: PassContext,
    layers: Sequence[tuple[str, str]],
    quantize: Callable[[ir.Model, set[str]], None],
    samples: Sequence[Mapping[str, np.ndarray]],
    metric: Metric,
    threshold: float,
) -> MixedPrecisionResult:
    """Rank ``layers`` ((node name, op type)) by sensitivity, then keep the fewest most-sensitive ones float so
    that metric >= threshold. ``quantize(clone, names)`` quantizes the named layers of a clone of ``model``."""
    reference = _run(model, samples)
    evaluations = 0

    def fidelity(quantized: set[str]) -> float:
        nonlocal evaluations
        clone = snapshot(model)
        quantize(clone, quantized)
        evaluations += 1
        return metric(reference, _run(clone, samples))

    table: list[LayerScore] = []
    with ctx.progress("layer sensitivity", len(layers)) as bar:
        for name, op_type in layers:
            table.append(LayerScore(name, op_type, fidelity({name})))
            bar.advance()
    ranked = sorted(table, key=lambda r: r.score)  # most sensitive first
    everything = {name for name, _ in layers}
    best = fidelity(everything)
    kept = 0
    if best < threshold:
        lo, hi = 1, len(ranked)  # the smallest k with fidelity(all but the k most sensitive) >= threshold
        found = None
        while lo <= hi:
            mid = (lo + hi) // 2
            score = fidelity(everything - {r.node for r in ranked[:mid]})
            if score >= threshold:
                found, hi = (mid, score), mid - 1
            else:
                lo = mid + 1
        if found is not None:
            kept, best = found
        else:
            kept, best = len(ranked), metric(reference, reference)
    float_layers = {r.node for r in ranked[:kept]}
    for r in table:
        r.kept_float = r.node in float_layers
    return MixedPrecisionResult(float_layers, table, best, best >= threshold, evaluations)


def resolve_metric(fidelity: str, metric: Metric | None) -> tuple[Metric, float, str]:
    """The metric and threshold from a pass's ``fidelity`` text, or a Python callable with ``fidelity`` as its bound."""
    if metric is not None:
        bound = float(fidelity) if fidelity else 0.0
        return metric, bound, f"custom metric >= {bound:g}"
    return parse_fidelity(fidelity)


def record(ctx: PassContext, result: MixedPrecisionResult, text: str) -> None:
    """Put the per-layer table and the outcome where the report and the CLI find them."""
    info = ctx.extra.setdefault("quantization", {})
    info["sensitivity"] = [dataclasses.asdict(r) for r in result.table]
    info["fidelity"] = {"target": text, "reached": result.fidelity, "met": result.met, "evaluations": result.evaluations}
    if not result.met:
        ctx.logger.warning("fidelity target %s not reached even with every layer float", text)


def first_samples(samples: Any, count: int) -> list[dict[str, np.ndarray]]:
    out = []
    for sample in samples:
        out.append(dict(sample))
        if len(out) >= count:
            break
    return out
