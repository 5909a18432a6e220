"""The pass manager: plans the pipeline, runs passes, verifies between them, and reports what changed."""

from __future__ import annotations

import dataclasses
import json
import resource
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import onnx_ir as ir
from onnxpress.irpasses.core.compare import OutputError
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import (
    OnnxpressError,
    PassFailed,
    PipelineError,
    VerificationError,
)
from onnxpress.irpasses.core.fixpoint import FixedPoint
from onnxpress.irpasses.core.instrument import PassInstrument
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import ALL_PROPERTIES, Property
from onnxpress.irpasses.core.registry import Registry, default_registry
from onnxpress.irpasses.core.snapshot import snapshot
from onnxpress.irpasses.core.verify import onnx_ir_logs, subgraphs, verify_model, warn_onnx_ir


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_nodes(graph: ir.Graph | ir.Function) -> int:
    total = 0
    for node in graph:
        total += 1 + sum(count_nodes(g) for g in subgraphs(node))
    return total


def weight_bytes(model: ir.Model) -> int:
    """Bytes of initializers plus tensors held in Constant nodes (paddle2onnx keeps weights there)."""
    total = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    for node in model.graph:
        if node.op_type == "Constant" and "value" in node.attributes:
            tensor = node.attributes["value"].value
            total += getattr(tensor, "nbytes", 0)
    return total


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


@dataclasses.dataclass
class PassRecord:
    name: str
    spec: str
    seconds: float = 0.0
    modified: bool = False
    nodes_before: int = 0
    nodes_after: int = 0
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    rss_mib: float = 0.0
    inserted: bool = False
    """Added by the manager to establish a property a later pass needs."""
    skipped: str | None = None
    stats: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped_analyses: list[str] = dataclasses.field(default_factory=list)
    max_abs_error: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PipelineReport:
    pipeline: str
    records: list[PassRecord] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    numerics: list[OutputError] | None = None
    numerics_note: str = "not checked"
    checker: str = "not run"
    explain: list[dict[str, str]] | None = None
    """With explain on: every rewrite-rule site that matched, and every near-miss with its reason."""
    quantization: dict[str, Any] | None = None
    """From quantization passes: layers kept out of full quantization and why, the per-layer sensitivity
    table, and the fidelity target reached."""
    details: dict[str, Any] | None = None
    """Per-layer results of other lossy passes, by kind: ``pruning`` (method, sparsity, kept importance, output
    error per layer; layers skipped or kept dense and why), ``permutation`` (importance kept under N:M with and
    without each region's permutation; regions refused and why), ``lowrank`` (rank and error per layer)."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["numerics"] = [e.to_dict() for e in self.numerics] if self.numerics is not None else None
        return d

    def quantization_lines(self) -> list[str]:
        q = self.quantization or {}
        lines = []
        if "fidelity" in q:
            f = q["fidelity"]
            lines.append(
                f"fidelity target {f['target']}: reached {f['reached']:.6f} ({'met' if f['met'] else 'NOT met'}) after "
                f"{f['evaluations']} evaluations"
            )
        if "cpu" in q:
            lines.append(f"integer kernels: {q['cpu']['assumed']}")
        auto = q.get("auto") or {}
        if "latency_ms" in auto:
            ms = auto["latency_ms"]
            chosen = f", cost model: {auto['cost_model']}" if "cost_model" in auto else ""
            lines.append(f"auto: int8 {ms['quantized'] / ms['float']:.2f}x the float model's time here{chosen}")
        if "fallback" in auto:
            lines.append(f"auto: {auto['fallback']}")
        kept = q.get("kept_float") or {}
        if kept:
            reasons: dict[str, list[str]] = {}
            for node, why in kept.items():
                reasons.setdefault(why, []).append(node)
            for why, nodes in reasons.items():
                shown = ", ".join(nodes[:6]) + (f" and {len(nodes) - 6} more" if len(nodes) > 6 else "")
                lines.append(f"not fully quantized ({why}): {shown}")
        return lines

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)

    def table(self, compact: bool = False) -> str:
        """A fixed-width per-pass table for terminals and logs; ``compact`` folds runs that changed nothing."""
        rows = [f"{'pass':<28} {'ms':>8} {'nodes':>13} {'weights':>21} {'RSS MiB':>8}  notes"]
        unchanged = [r for r in self.records if not r.modified and not r.skipped and not r.inserted]
        for r in self.records:
            if compact and r in unchanged:
                continue
            nodes = f"{r.nodes_before}->{r.nodes_after}" if r.modified else f"{r.nodes_after}"
            mb = format_bytes(r.weight_bytes_after)
            if format_bytes(r.weight_bytes_before) != mb:
                mb = f"{format_bytes(r.weight_bytes_before)}->{mb}"
            notes = []
            if r.skipped:
                notes.append(f"skipped: {r.skipped}")
            if r.inserted:
                notes.append("inserted (needed later)")
            if not r.modified and not r.skipped:
                notes.append("no change")
            notes += [f"{k}={v}" for k, v in r.stats.items() if v]
            notes += r.notes
            rows.append(f"{r.spec:<28} {r.seconds * 1e3:>8.1f} {nodes:>13} {mb:>21} {r.rss_mib:>8.0f}  {', '.join(notes)}")
        if compact and unchanged:
            rows.append(f"({len(unchanged)} more pass runs changed nothing: {sum(r.seconds for r in unchanged) * 1e3:.0f} ms)")
        rows.append(f"total {self.seconds:.2f} s, peak RSS {self.peak_rss_mib:.0f} MiB; checker: {self.checker}")
        rows += self.quantization_lines()
        if self.numerics is not None:
            for e in self.numerics:
                rows.append(
                    f"  output {e.name}: max abs {e.max_abs:.3g}, max rel {e.max_rel:.3g}, cosine {e.cosine:.6f} "
                    f"{'OK' if e.within else 'BEYOND TOLERANCE'}"
                )
        rows.append(f"numeric check: {self.numerics_note}")
        return "\n".join(rows)

    def explain_text(self, limit: int = 12) -> str:
        """Per pass and rule: sites matched, then near-misses with the reason the rule gave."""
        if not self.explain:
            return "explain: no rewrite rule matched or nearly matched anywhere"
        grouped: dict[tuple[str, str], list[dict[str, str]]] = {}
        seen: set[tuple[str, ...]] = set()
        for event in self.explain:
            key = tuple(event.values())
            if event["status"] != "matched" and key in seen:  # the same near-miss again in a later fixpoint round
                continue
            seen.add(key)
            grouped.setdefault((event["pass"], event["rule"]), []).append(event)
        lines = []
        for (pass_name, rule), events in grouped.items():
            matched = [e for e in events if e["status"] == "matched"]
            misses = [e for e in events if e["status"] != "matched"]
            lines.append(f"{pass_name} / {rule}: {len(matched)} matched, {len(misses)} near-misses")
            for e in misses[:limit]:
                lines.append(f"    near-miss at {e['node']}: {e['reason'] or 'no reason given'}")
            if len(misses) > limit:
                lines.append(f"    ... and {len(misses) - limit} more")
        return "\n".join(lines)


PlannedPass = tuple[Pass | ir.passes.PassBase, bool]


def plan_pipeline(
    passes: Sequence[Pass | ir.passes.PassBase], model: ir.Model, registry: Registry | None = None
) -> list[PlannedPass]:
    """Check every pass's needs before running anything; insert providers for missing properties.

    Facts holding on the input are found with each property's cheap ``holds`` check. A need that nothing
    establishes and no provider can raises PipelineError naming the pass and the missing property.
    A ``fixpoint`` group is planned as one pass through its children.
    """
    established: set[Property] = {p for p in ALL_PROPERTIES if p.holds is not None and p.holds(model)}
    return _plan(passes, established, registry or default_registry())


def _plan(passes: Sequence[Pass | ir.passes.PassBase], established: set[Property], registry: Registry) -> list[PlannedPass]:
    planned: list[PlannedPass] = []

    def apply(pass_: Pass | ir.passes.PassBase) -> None:
        if isinstance(pass_, Pass):
            kept = {p for p in established if p in pass_.keeps}
            established.clear()
            established.update(kept | set(pass_.provides))
        else:
            established.clear()

    for pass_ in passes:
        if isinstance(pass_, FixedPoint):
            inner = _plan(pass_.passes, established, registry)
            group = FixedPoint(max=pass_.max)
            group.passes = [p for p, _ in inner]  # type: ignore[misc]
            group.inserted = {id(p) for p, was_inserted in inner if was_inserted}
            planned.append((group, False))
            continue
        needs = pass_.needs if isinstance(pass_, Pass) else frozenset()
        for prop in sorted(needs - established, key=str):
            if prop.provider is None:
                raise PipelineError(
                    f"pass '{pass_.name}' needs '{prop}' ({prop.doc}), and no earlier pass in the pipeline establishes it",
                    hint="add a pass that establishes it before this one",
                )
            provider = registry.get_pass(prop.provider)()
            planned.append((provider, True))
            apply(provider)
            if prop not in established:
                raise PipelineError(f"provider pass '{prop.provider}' does not establish '{prop}' needed by '{pass_.name}'")
        planned.append((pass_, False))
        apply(pass_)
    return planned


class PassManager:
    """Runs passes in order with structural verification after each and instruments around each.

    ``bisect_limit``: run only the first N passes that are not ``required`` (LLVM opt-bisect); the rest are
    skipped and reported as such.
    """

    def __init__(
        self,
        passes: Sequence[Pass | ir.passes.PassBase],
        *,
        ctx: PassContext | None = None,
        verify_each: bool = True,
        instruments: Sequence[PassInstrument] = (),
        registry: Registry | None = None,
        bisect_limit: int | None = None,
        run_checker: bool = True,
    ) -> None:
        self.passes = list(passes)
        self.ctx = ctx or PassContext()
        self.verify_each = verify_each
        self.instruments = list(instruments)
        self.registry = registry
        self.bisect_limit = bisect_limit
        self.run_checker = run_checker

    def run(self, model: ir.Model) -> tuple[ir.Model, PipelineReport]:
        planned = plan_pipeline(self.passes, model, self.registry)
        report = PipelineReport(pipeline=",".join(_spec(p) for p, inserted in planned if not inserted))
        start = time.perf_counter()
        for inst in self.instruments:
            inst.before_pipeline(model, [p for p, _ in planned])
        check_structure = self.run_checker and weight_bytes(model) <= _CHECKER_LIMIT
        original = snapshot(model) if check_structure else None  # to tell whose fault a checker failure is
        ran: list[str] = []
        self._optional_seen = 0
        self._last_counts: tuple[int, int] | None = None
        self._current: Pass | ir.passes.PassBase | None = None
        try:
            for pass_, inserted in planned:
                if isinstance(pass_, FixedPoint):
                    self._run_fixpoint(pass_, model, report, ran)
                else:
                    self._step(pass_, model, report, ran, PassRecord(name=_name(pass_), spec=_spec(pass_), inserted=inserted))
            self._current = None
            report.seconds = time.perf_counter() - start
            if self.run_checker and original is None:
                report.checker = "skipped (weights over 1 GB; structural verification ran after every pass)"
            if original is not None:
                report.checker = _run_checker(model)
                if report.checker.startswith("FAILED"):
                    before = _run_checker(original)
                    if not before.startswith("FAILED"):
                        raise VerificationError(
                            f"the pipeline made the model fail onnx.checker: {report.checker[8:]}",
                            hint="rerun with --verify-each --dump-ir DIR to see which pass",
                        )
                    report.checker = f"{report.checker} (the input fails too: {before[8:]})"
                    if "should be stored in" not in before:  # external data the weightless copy checks from elsewhere
                        warnings.warn(f"the input model fails onnx.checker ({before[8:]}); it was carried through as it is", stacklevel=2)
            for inst in self.instruments:
                inst.after_pipeline(model, report)
        except BaseException as err:
            current = self._current
            for inst in self.instruments:
                inst.after_failure(current if isinstance(current, Pass) else None, model, err, ran)
            raise
        report.seconds = time.perf_counter() - start
        report.peak_rss_mib = _peak_rss_mib()
        return model, report

    def _step(self, pass_: Pass | ir.passes.PassBase, model: ir.Model, report: PipelineReport, ran: list[str], record: PassRecord) -> bool:
        """Run one pass (or skip it under the bisect limit); return whether it changed the model."""
        self._current = pass_
        if not getattr(pass_, "required", True) and self.bisect_limit is not None:
            self._optional_seen += 1
            if self._optional_seen > self.bisect_limit:
                record.skipped = f"bisect limit {self.bisect_limit}"
                record.nodes_before = record.nodes_after = count_nodes(model.graph)
                report.records.append(record)
                return False
        self._run_one(pass_, model, record, ran)
        report.records.append(record)
        ran.append(record.spec)
        return record.modified

    def _run_fixpoint(self, group: FixedPoint, model: ir.Model, report: PipelineReport, ran: list[str]) -> None:
        from onnxpress.irpasses.core.fixpoint import Schedule

        inserted = getattr(group, "inserted", set())
        schedule = Schedule()
        for iteration in range(1, group.max + 1):
            changed = False
            for index, child in enumerate(group.passes):
                if not schedule.due(index):
                    continue
                record = PassRecord(name=child.name, spec=f"{child.spec()}#{iteration}", inserted=id(child) in inserted)
                changed |= schedule.ran(index, self._step(child, model, report, ran, record))
            if not changed:
                return
        report.records[-1].notes.append(f"fixpoint stopped at max={group.max} iterations while still changing")

    def _run_one(self, pass_: Pass | ir.passes.PassBase, model: ir.Model, record: PassRecord, ran: list[str]) -> None:
        if self._last_counts is None:
            self._last_counts = (count_nodes(model.graph), weight_bytes(model))
        record.nodes_before, record.weight_bytes_before = self._last_counts
        for inst in self.instruments:
            inst.before_pass(pass_, model)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        try:
            if isinstance(pass_, Pass):
                result = pass_.run(model, self.ctx)
            else:
                result = pass_(model)
        except OnnxpressError:
            raise
        except Exception as err:
            raise PassFailed(record.spec, ran, err) from err
        record.seconds = time.perf_counter() - t0
        if result.model is not model:
            raise PassFailed(record.spec, ran, TypeError("an in-place pass returned a different model object"))
        record.modified = bool(result.modified)
        if isinstance(result, PassResult):
            record.stats = dict(result.stats)
            keeps = None if not result.modified else (result.keeps if result.keeps is not None else frozenset())
        else:
            keeps = None if not result.modified else frozenset()
        record.dropped_analyses = self.ctx.analyses.invalidate(keeps)
        if record.modified:
            record.nodes_after, record.weight_bytes_after = count_nodes(model.graph), weight_bytes(model)
        else:
            record.nodes_after, record.weight_bytes_after = record.nodes_before, record.weight_bytes_before
        self._last_counts = (record.nodes_after, record.weight_bytes_after)
        record.rss_mib = _rss_mib()
        if self.verify_each and record.modified:
            verify_model(model, record.spec)
        for inst in self.instruments:
            inst.after_pass(pass_, model, record)  # type: ignore[arg-type]


def _name(pass_: Any) -> str:
    return getattr(pass_, "name", None) or type(pass_).__name__


def _spec(pass_: Any) -> str:
    return pass_.spec() if isinstance(pass_, Pass) else _name(pass_)


_CHECKER_LIMIT = 1_000_000_000


def _run_checker(model: ir.Model) -> str:
    """onnx.checker on the graph structure. Weights of 1 KiB or more become typed graph inputs of a cheap copy
    (the checker wants external data as real files, so placeholders will not do): the whole proto plus its
    serialization was the peak of a 4-bit MiniLM run, +108 MB. Our serializer writes the tensors themselves."""
    import onnx
    from onnxpress.irpasses.core.snapshot import weightless

    structure = weightless(model)
    with onnx_ir_logs() as logged:
        try:
            proto = ir.to_proto(structure)
        except Exception as err:  # onnx-ir cannot write the model (a name that is not UTF-8, a broken tensor)
            while err.__cause__ is not None:
                err = err.__cause__
            return f"FAILED: cannot be serialized: {type(err).__name__}: {err}"
    warn_onnx_ir(logged, "writing the model for onnx.checker")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0]
        return f"FAILED: {first}"
    return "passed"


def bisect(
    run_with_limit: Callable[[int | None], bool], optional_count: int
) -> int | None:
    """Smallest number of optional passes whose run fails ``run_with_limit``; None if the full run passes.

    ``run_with_limit(k)`` runs the pipeline on a fresh copy of the input with ``bisect_limit=k`` and returns
    True when it succeeds. The k-th optional pass is then the culprit (k is 1-based).
    """
    if run_with_limit(None):
        return None
    if not run_with_limit(0):
        return 0  # fails even with every optional pass skipped: a required pass is at fault
    lo, hi = 0, optional_count  # run(lo) passes, run(hi) fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run_with_limit(mid):
            lo = mid
        else:
            hi = mid
    return hi


__all__ = ["PassManager", "PassRecord", "PipelineReport", "VerificationError", "bisect", "plan_pipeline"]
