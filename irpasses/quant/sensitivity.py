"""Per-layer sensitivity and mixed precision: keep the layers that hurt most in float until a fidelity target holds.

Sensitivity of a layer = the fidelity of the model with only that layer quantized (the per-layer analysis of
ModelOpt/AIMET). Layers are then kept float most-sensitive first; the smallest such set that meets the target
is found by bisection over the ranked list (fidelity is close to monotone in it), so a model with n layers
costs n + log2(n) evaluations on the evaluation samples, each an onnxruntime session on a cheap clone.
"""

from __future__ import annotations

import dataclasses
import logging
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


MIXED_SCALE = 100.0
"""A channel-first output whose channels' RMS differ by more than this has a cosine that is its largest channels'."""
_warned_mixed: set[tuple[str, tuple[int, ...]]] = set()


def warn_if_mixed_scale(reference: Outputs) -> None:
    """Warn once per output when its channels (axis 1 of a rank >= 3 output) differ in scale by more than
    ``MIXED_SCALE``: NudeNet's YOLOv8 output puts box coordinates in pixels beside class scores in [0, 1], and
    2:4 pruning kept cosine 0.997 while detection F1 against float fell to 0.62."""
    for name, array in (reference[0].items() if reference else ()):
        array = np.asarray(array)
        key = (name, array.shape)
        if array.ndim < 3 or array.shape[1] < 2 or key in _warned_mixed or not np.issubdtype(array.dtype, np.floating):
            continue
        rms = np.sqrt(np.mean(np.square(np.moveaxis(array, 1, 0).reshape(array.shape[1], -1), dtype=np.float64), axis=1))
        if rms.max() > MIXED_SCALE * max(float(rms.min()), 1e-30):
            _warned_mixed.add(key)
            logging.getLogger("onnxpress").warning(
                "fidelity: output %r's channels (axis 1) differ in scale by %.0fx, so its cosine is that of its largest "
                "channels (a detector's boxes, not its class scores); a target on the task's own metric judges what "
                "is read: fidelity=\"package.module:function>=X\"", name, rms.max() / max(float(rms.min()), 1e-30))


def cosine(reference: Outputs, candidate: Outputs) -> float:
    """Worst cosine similarity over samples and outputs (outputs flattened)."""
    warn_if_mixed_scale(reference)
    worst = 1.0
    for ref, got in zip(reference, candidate):
        for name, r in ref.items():
            a, b = np.asarray(r, np.float64).ravel(), np.asarray(got[name], np.float64).ravel()
            denom = np.linalg.norm(a) * np.linalg.norm(b)
            worst = min(worst, float(a @ b / denom) if denom else float(np.array_equal(a, b)))
    return worst


def neg_max_abs(reference: Outputs, candidate: Outputs) -> float:
    return -max(float(np.max(np.abs(np.asarray(r) - np.asarray(got[n])))) for ref, got in zip(reference, candidate) for n, r in ref.items())


def top1(reference: Outputs, candidate: Outputs) -> float:
    """Share of positions whose argmax over the last axis agrees (classification, CTC decoding); outputs
    whose last axis has one element are skipped."""
    agree = total = 0
    for ref, got in zip(reference, candidate):
        for name, r in ref.items():
            r = np.asarray(r)
            if r.ndim == 0 or r.shape[-1] < 2:
                continue
            same = np.argmax(r, axis=-1) == np.argmax(np.asarray(got[name]), axis=-1)
            agree, total = agree + int(same.sum()), total + same.size
    return agree / total if total else 1.0


METRICS: dict[str, Metric] = {"cosine": cosine, "max_abs": neg_max_abs, "top1": top1}
_FIDELITY = re.compile(r"^\s*(cosine|max_abs|top1|[A-Za-z_][\w.]*:[A-Za-z_]\w*)\s*(>=|<=)\s*([0-9.eE+-]+)\s*$")


def imported_metric(reference: str) -> Metric:
    """'package.module:function' -> the function, a task metric (float outputs, candidate outputs) per sample ->
    score, higher is better. Why: the built-in cosine is blind to what a task reads. On NudeNet's YOLOv8 output
    [1, 4 + 18, anchors], box coordinates in pixels outweigh class scores in [0, 1], so 2:4 everywhere kept
    cosine 0.997 while half the detections changed."""
    from onnxpress.irpasses.core.callables import resolve_callable

    return resolve_callable(reference, f"fidelity metric {reference!r}")


def parse_fidelity(text: str) -> tuple[Metric, float, str]:
    """'cosine>=0.995', 'top1>=0.99', 'max_abs<=0.01' or 'package.module:function>=0.9' (``imported_metric``)
    -> (metric, threshold on the metric's higher-is-better scale, text)."""
    match = _FIDELITY.match(text)
    if not match:
        raise PassOptionError(
            f"fidelity target {text!r} is not understood",
            hint="write e.g. 'cosine>=0.995', 'top1>=0.99', 'max_abs<=0.01' or a task metric 'mypkg.metrics:f1>=0.95'")
    name, op, number = match.groups()
    value = float(number)
    if ":" in name:
        if op != ">=":
            raise PassOptionError(f"fidelity target {text!r}: a task metric is a score, higher is better: use {name}>=X")
        return imported_metric(name), value, text.strip()
    if (name != "max_abs") != (op == ">="):
        raise PassOptionError(f"fidelity target {text!r}: use cosine>=X, top1>=X or max_abs<=X")
    return METRICS[name], (-value if name == "max_abs" else value), text.strip()


FULL, REDUCED, FLOAT = "full", "reduced", "float"
"""Levels of a layer: fully quantized; reduced (e.g. int8 weights with float activations); float."""


@dataclasses.dataclass
class LayerScore:
    node: str
    op_type: str
    score: float
    """Fidelity with only this layer fully quantized (the rest float)."""
    reduced_score: float | None = None
    """Fidelity with only this layer at the reduced level, when there is one."""
    level: str = FULL
    """Where the search left it: full, reduced or float."""
    alone: bool = True
    """False for a reduced-only layer scored in a group with others: together they met the target, so none
    of them can break it alone (fidelity is near monotone) and ``score`` is the group's, a lower bound.
    Most layers an onnxruntime cost model leaves at int8 weights barely move the output (PP-OCRv4 det: 48
    such layers, all but one >= 0.999 alone): testing them in halving groups costs a few evaluations, not 48."""


@dataclasses.dataclass
class MixedPrecisionResult:
    levels: dict[str, str]
    table: list[LayerScore]
    fidelity: float
    met: bool
    evaluations: int

    @property
    def float_layers(self) -> set[str]:
        return {n for n, level in self.levels.items() if level != FULL}


RANKING_SHARE = 0.25
"""Share of the evaluation samples that rank layers (PP-OCRv4 det, 32 calibration pages, 8 evaluated: the
search took 78 of auto's 96 s, 67 s of it in onnxruntime)."""


def run_samples(model: ir.Model, samples: Sequence[Mapping[str, np.ndarray]], optimization: str) -> Outputs:
    from onnxpress.backends.ort.runner import make_session, run_session

    session = make_session(model, optimization=optimization, low_memory=True)
    return [run_session(session, s) for s in samples]


def evaluation_level(target: str | None) -> str:
    """How trials run: as onnxruntime will run the result (its QDQ fusions into integer kernels; PP-OCRv4 det
    trials 1.7x faster than unfused) unless the target is another runtime, where Q/DQ stay simulated in float."""
    return "all" if target in (None, "ort") else "disable"


def search(
    model: ir.Model,
    ctx: PassContext,
    layers: Sequence[tuple[str, str]],
    quantize: Callable[[ir.Model, Mapping[str, str]], None],
    samples: Sequence[Mapping[str, np.ndarray]],
    metric: Metric,
    threshold: float,
    reduced: bool = True,
    sizes: Mapping[str, int] | None = None,
    reduced_only: frozenset[str] = frozenset(),
) -> MixedPrecisionResult:
    """Rank ``layers`` ((node name, op type)) by sensitivity, then take the fewest most-sensitive ones out of
    full quantization so that metric >= threshold. A layer taken out goes to the reduced level unless that
    level alone already breaks the target (then float). ``quantize(clone, levels)`` applies {name: level}
    to a clone of ``model`` (names not given stay float). With ``sizes`` (parameters per layer), the layers
    taken out are then tried back at full one at a time, largest first, and kept there while the target
    holds: the ranking is by sensitivity alone, so bisection can take out big layers it did not need to
    (and where single-layer scores sit at a common floor, their order is noise: MiniLM's embedding tables).
    Layers in ``reduced_only`` have no full level (``quantize`` applies reduced for full): they are
    group-tested (``LayerScore.alone``) and ranked after the layers scored alone. Trials run the way the
    target runtime will (``evaluation_level``). When every layer at full meets the target, no layer is scored
    and the table is empty, unless ``ctx.extra["sensitivity_table"]`` asks for it (``--sensitivity-table``).
    Layers are ranked on the first quarter of ``samples`` (at least 2; ``RANKING_SHARE``): one trial per layer is
    most of a search's time, and a ranking needs the order, not the last digit. Every decision that is kept
    (the all-full trial, the bisection, the win-back) is judged on all of them."""
    optimization = evaluation_level(ctx.target)
    reference = run_samples(model, samples, optimization)
    ranking = max(min(2, len(samples)), int(len(samples) * RANKING_SHARE))
    order = {name: i for i, (name, _) in enumerate(layers)}
    evaluations = 0

    def fidelity(levels: Mapping[str, str], rank_only: bool = False) -> float:
        nonlocal evaluations
        clone = snapshot(model)
        quantize(clone, levels)
        evaluations += 1
        count = ranking if rank_only else len(samples)
        return metric(reference[:count], run_samples(clone, samples[:count], optimization))

    op_types = dict(layers)

    def score_together(names: list[str], advance: Callable[[], None]) -> list[LayerScore]:
        """Group testing over reduced-only layers: a group that meets the target together is scored as a
        group (see LayerScore.alone); one that does not is halved, down to single layers."""
        advance()
        if len(names) == 1:
            score = fidelity({names[0]: REDUCED})
            return [LayerScore(names[0], op_types[names[0]], score, score)]
        score = fidelity(dict.fromkeys(names, REDUCED))
        if score >= threshold:
            return [LayerScore(n, op_types[n], score, score, alone=False) for n in names]
        middle = len(names) // 2
        return score_together(names[:middle], advance) + score_together(names[middle:], advance)

    all_full: float | None = None
    if not ctx.extra.get("sensitivity_table"):
        # every layer at full may already meet the target (det with GPTQ rounding): then there is nothing to
        # rank, and scoring each layer alone would be most of the search's time (det: 20 of 28 s)
        all_full = fidelity(dict.fromkeys(order, FULL))
        if all_full >= threshold:
            ctx.logger.info("fidelity search: every layer fully quantized meets the target (%.5f); no layer scored", all_full)
            return MixedPrecisionResult(dict.fromkeys(order, FULL), [], all_full, True, evaluations)
    together = [name for name, _ in layers if name in reduced_only]
    with ctx.progress("small-layer sensitivity (grouped)") as group_bar:
        table: list[LayerScore] = score_together(together, group_bar.advance) if together else []
    layers = [(name, op_type) for name, op_type in layers if name not in reduced_only]
    with ctx.progress("layer sensitivity", len(layers) * (2 if reduced else 1)) as bar:
        for name, op_type in layers:
            row = LayerScore(name, op_type, fidelity({name: FULL}, rank_only=True))
            bar.advance()
            if reduced:
                row.reduced_score = fidelity({name: REDUCED}, rank_only=True)
                bar.advance()
            table.append(row)
    demoted = {r.node: (REDUCED if r.reduced_score is not None and r.reduced_score >= threshold else FLOAT) for r in table}
    ranked = sorted(table, key=lambda r: r.score if r.alone else np.inf)  # most sensitive first

    def levels_with(k: int) -> dict[str, str]:
        out = {r.node: FULL for r in ranked}
        out.update({r.node: demoted[r.node] for r in ranked[:k]})
        return out

    def smallest(count: int, levels_for: Callable[[int], dict[str, str]]) -> tuple[int, float] | None:
        """Bisection for the fewest of ``count`` ranked changes that meet the target (fidelity is near
        monotone in how many are made)."""
        lo, hi, found = 1, count, None
        while lo <= hi:
            mid = (lo + hi) // 2
            score = fidelity(levels_for(mid))
            if score >= threshold:
                found, hi = (mid, score), mid - 1
            else:
                lo = mid + 1
        return found

    table.sort(key=lambda r: order[r.node])
    best, kept = (fidelity(levels_with(0)) if all_full is None else all_full), 0
    levels = levels_with(0)
    if best < threshold:
        found = smallest(len(ranked), levels_with)
        if found is not None:
            kept, best = found
            levels = levels_with(kept)
        else:
            # even every layer at the reduced level adds up to too much error: send the fewest layers with
            # the worst reduced-level scores on to float, the rest staying reduced
            everything = levels_with(len(ranked))
            worst = sorted((r for r in ranked if demoted[r.node] == REDUCED), key=lambda r: r.reduced_score)

            def to_float(m: int) -> dict[str, str]:
                return {**everything, **{r.node: FLOAT for r in worst[:m]}}

            found = smallest(len(worst), to_float) if worst else None
            if found is None:
                levels = {r.node: FLOAT for r in ranked}
                best = fidelity(levels)
            else:
                levels, best = to_float(found[0]), found[1]
            kept = len(ranked)
    if sizes and kept and best >= threshold:
        # the ranking is by sensitivity alone: win back bytes, largest layers first, while the target holds
        for r in sorted(ranked, key=lambda r: (-sizes.get(r.node, 0), -(r.score if r.alone else 1.0))):  # least sensitive first among equals
            if r.node in reduced_only and levels[r.node] == REDUCED:
                continue  # its full level is the reduced one
            for level in (FULL, REDUCED) if levels[r.node] == FLOAT and reduced else (FULL,):
                if levels[r.node] == FULL:
                    break
                trial = {**levels, r.node: level}
                score = fidelity(trial)
                if score >= threshold:
                    levels, best = trial, score
                    break
    for r in table:
        r.level = levels[r.node]
    return MixedPrecisionResult(levels, table, best, best >= threshold, evaluations)


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
    reasons = {REDUCED: "sensitive: float activations, reduced weights", FLOAT: "sensitive: kept float"}
    info["kept_float"] = {name: reasons[level] for name, level in result.levels.items() if level != FULL}
    if not result.met:
        ctx.logger.warning("fidelity target %s not reached even with every layer float", text)


def first_samples(samples: Any, count: int) -> list[dict[str, np.ndarray]]:
    out = []
    for sample in samples:
        out.append(dict(sample))
        if len(out) >= count:
            break
    return out
