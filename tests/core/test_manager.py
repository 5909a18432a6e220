from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx_ir as ir
import onnxpress
import pytest
from onnxpress.irpasses.core import (
    CALIBRATED,
    TOPO_SORTED,
    Analysis,
    NumericMismatchError,
    Pass,
    PassContext,
    PassFailed,
    PassManager,
    PassOptionError,
    PipelineError,
    Registry,
    Reproducer,
    VerificationError,
    bisect,
)
from onnxpress.irpasses.core.numerics import NumericsCheck
from onnxpress.tools.testing import parse_model

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3] x) => (float[2, 3] y) {
    a = Relu(x)
    b = Identity(a)
    c = Add(b, b)
    unused = Sigmoid(x)
    y = Mul(c, a)
}
"""

SAMPLES = [{"x": np.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]], dtype=np.float32)}]


def model() -> ir.Model:
    return parse_model(TEXT)


def node(m: ir.Model, op: str) -> ir.Node:
    return next(n for n in m.graph if n.op_type == op)


@dataclasses.dataclass
class AddToMul(Pass):
    """Wrong on purpose: turns Add(b, b) into Mul(b, b)."""

    name = "test-add-to-mul"
    required = False

    def run(self, model, ctx):
        n = node(model, "Add")
        new = ir.node("Mul", list(n.inputs))
        model.graph.insert_before(n, new)
        n.outputs[0].replace_all_uses_with(new.outputs[0])
        model.graph.remove(n, safe=True)
        new.outputs[0].name = n.outputs[0].name  # keep the value name, as real rewrites do
        return self.result(model, True)


@dataclasses.dataclass
class Nudge(Pass):
    """Changes the output by a tiny amount (within tolerance), to test attribution."""

    name = "test-nudge"
    required = False

    def run(self, model, ctx):
        n = model.graph.outputs[0].producer()
        eps = ir.Value(name=f"eps{len(model.graph.initializers)}", const_value=ir.tensor(np.float32(1e-7)))
        model.graph.register_initializer(eps)
        out = n.outputs[0]
        add = ir.node("Add", [out, eps])
        model.graph.insert_after(n, add)
        model.graph.outputs[0] = add.outputs[0]
        name = out.name
        out.name = f"{name}_pre{len(model.graph)}"
        add.outputs[0].name = name
        add.outputs[0].type, add.outputs[0].shape = out.type, out.shape  # a graph output needs its type
        return self.result(model, True)


@dataclasses.dataclass
class Unsafe(Pass):
    """Removes the Relu without rewiring its users: the structural verifier must catch this."""

    name = "test-unsafe"

    def run(self, model, ctx):
        model.graph.remove(node(model, "Relu"), safe=False)
        return self.result(model, True)


@dataclasses.dataclass
class Crashes(Pass):
    name = "test-crashes"

    def run(self, model, ctx):
        raise KeyError("boom")


@dataclasses.dataclass
class NeedsSorted(Pass):
    name = "test-needs-sorted"
    needs = frozenset({TOPO_SORTED})

    def run(self, model, ctx):
        return self.result(model, False)


@dataclasses.dataclass
class NeedsCalibration(Pass):
    name = "test-needs-calibration"
    needs = frozenset({CALIBRATED})

    def run(self, model, ctx):  # pragma: no cover - refused before running
        return self.result(model, False)


class CountNodes(Analysis[int]):
    name = "test-count-nodes"
    computed = 0

    @classmethod
    def compute(cls, model, ctx):
        cls.computed += 1
        return len(model.graph)


@dataclasses.dataclass
class UsesAnalysis(Pass):
    name = "test-uses-analysis"
    modify: bool = False
    keep: bool = False

    def run(self, model, ctx):
        ctx.analyses.get(CountNodes, model, ctx)
        result = self.result(model, self.modify)
        if self.keep and self.modify:
            result.keeps = frozenset({CountNodes})
        return result


def test_cleanup_runs_and_reports_each_pass() -> None:
    m = model()
    out, report = onnxpress.optimize(m, "cleanup", samples=SAMPLES)
    assert [n.op_type for n in out.graph] == ["Relu", "Add", "Mul"]
    names = [r.name for r in report.records]
    assert names == ["lift-constants", "remove-identity", "cse", "dedup-initializers", "dead-code", "topo-sort"]
    by_name = {r.name: r for r in report.records}
    assert by_name["remove-identity"].modified and by_name["remove-identity"].nodes_after == 4
    assert by_name["dead-code"].nodes_after == 3 and not by_name["topo-sort"].modified
    assert report.numerics is not None and all(e.within and e.max_abs == 0 for e in report.numerics)
    assert report.checker == "passed"
    json.loads(report.to_json())
    assert "remove-identity" in report.table()


def test_missing_property_gets_its_provider_inserted() -> None:
    m = model()
    relu, ident = node(m, "Relu"), node(m, "Identity")
    m.graph.remove(relu)
    m.graph.insert_after(ident, relu)  # now Identity uses Relu's output before it is defined
    _, report = PassManager([NeedsSorted()], registry=Registry()).run(m)
    assert [(r.name, r.inserted) for r in report.records] == [("topo-sort", True), ("test-needs-sorted", False)]
    assert report.records[0].modified


def test_unsatisfiable_need_is_refused_before_running() -> None:
    with pytest.raises(PipelineError, match="pass 'test-needs-calibration' needs 'calibrated'"):
        PassManager([Unsafe(), NeedsCalibration()]).run(model())


def test_structural_verifier_names_the_pass() -> None:
    with pytest.raises(VerificationError, match="after pass 'test-unsafe'.*Relu node") as info:
        PassManager([Unsafe()]).run(model())
    assert info.value.pass_name == "test-unsafe"


def test_crash_names_the_pass_and_those_before() -> None:
    with pytest.raises(PassFailed, match=r"pass 'test-crashes' failed: KeyError: 'boom' \(passes run before it: topo-sort\)"):
        PassManager([onnxpress.irpasses.cleanup.topo_sort.TopoSort(), Crashes()]).run(model())


def test_numeric_check_names_pass_output_and_first_diverging_node() -> None:
    check = NumericsCheck(SAMPLES, each=True)
    with pytest.raises(NumericMismatchError) as info:
        PassManager([Nudge(), AddToMul()], instruments=[check]).run(model())
    msg = info.value.message
    assert info.value.pass_name == "test-add-to-mul"
    assert "pass 'test-add-to-mul' changed output 'y'" in msg
    assert "first diverging node: Mul node" in msg and "(output 'c'" in msg


def test_numeric_check_at_end_points_to_verify_each() -> None:
    with pytest.raises(NumericMismatchError, match="the pipeline changed output 'y'") as info:
        onnxpress.optimize(model(), [AddToMul()], samples=SAMPLES)
    assert "--verify-each" in (info.value.hint or "")


def test_attribution_records_which_pass_moved_the_error() -> None:
    _, report = onnxpress.optimize(model(), [Nudge()], samples=SAMPLES, verify="each")
    (record,) = report.records
    assert record.max_abs_error is not None and 0 < record.max_abs_error < 1e-5
    assert any("moved max abs error from 0 to" in note for note in record.notes)


def test_bisect_finds_the_culprit_among_optional_passes() -> None:
    passes = [Nudge(), AddToMul(), Nudge()]

    def ok(limit):
        try:
            onnxpress.optimize(model(), passes, samples=SAMPLES, bisect_limit=limit)
        except NumericMismatchError:
            return False
        return True

    assert bisect(ok, 3) == 2  # the second optional pass
    assert bisect(lambda limit: True, 3) is None


def test_bisect_limit_skips_later_optional_passes() -> None:
    _, report = PassManager([Nudge(), AddToMul()], bisect_limit=1).run(model())
    assert report.records[1].skipped == "bisect limit 1"


def test_analyses_are_dropped_unless_kept() -> None:
    ctx = PassContext()
    CountNodes.computed = 0
    m = model()
    PassManager([UsesAnalysis(), UsesAnalysis()], ctx=ctx).run(m)
    assert CountNodes.computed == 1  # unmodified: kept
    PassManager([UsesAnalysis(modify=True, keep=True), UsesAnalysis()], ctx=ctx).run(m)
    assert CountNodes.computed == 1  # declared kept
    _, report = PassManager([UsesAnalysis(modify=True), UsesAnalysis()], ctx=ctx).run(m)
    assert CountNodes.computed == 2  # dropped, recomputed
    assert report.records[0].dropped_analyses == ["test-count-nodes"]


def test_reproducer_is_written_on_failure(tmp_path) -> None:
    repro = Reproducer(tmp_path / "repro", "test-unsafe")
    with pytest.raises(VerificationError):
        PassManager([Unsafe()], instruments=[repro]).run(model())
    assert (tmp_path / "repro" / "pipeline.txt").read_text().strip() == "test-unsafe"
    reloaded = onnxpress.load(tmp_path / "repro" / "input.onnx")
    assert [n.op_type for n in reloaded.graph] == ["Relu", "Identity", "Add", "Sigmoid", "Mul"]
    assert "failed at: test-unsafe" in (tmp_path / "repro" / "README.txt").read_text()


def test_our_passes_run_under_onnx_ir_pass_manager() -> None:
    from onnxpress.irpasses.cleanup.dead_code import DeadCode
    from onnxpress.irpasses.cleanup.remove_identity import RemoveIdentity

    m = model()
    result = ir.passes.PassManager([RemoveIdentity(), DeadCode()])(m)
    assert result.modified and [n.op_type for n in m.graph] == ["Relu", "Add", "Mul"]


def test_onnx_ir_passes_run_under_our_manager() -> None:
    m = model()
    _, report = PassManager([ir.passes.common.RemoveUnusedNodesPass()]).run(m)
    assert report.records[0].modified and len(m.graph) == 4


def test_model_proto_in_model_proto_out() -> None:
    proto = ir.to_proto(model())
    out, _ = onnxpress.optimize(proto, "cleanup", samples=SAMPLES)
    assert type(out) is type(proto) and len(out.graph.node) == 3
    assert len(proto.graph.node) == 5  # the caller's proto is not modified


@dataclasses.dataclass
class UntypedOutput(Pass):
    """Replaces the graph output with a value that has no type: onnx.checker must reject the result."""

    name = "test-untyped-output"

    def run(self, model, ctx):
        n = model.graph.outputs[0].producer()
        neg = ir.node("Neg", [n.outputs[0]])
        model.graph.insert_after(n, neg)
        model.graph.outputs[0] = neg.outputs[0]
        neg.outputs[0].name = "z"
        return self.result(model, True)


def test_checker_failure_caused_by_the_pipeline_is_an_error() -> None:
    with pytest.raises(VerificationError, match="the pipeline made the model fail onnx.checker: Field 'type'"):
        PassManager([UntypedOutput()]).run(model())


def test_unknown_verify_mode_is_refused_not_ignored() -> None:
    from onnxpress.tools.testing import mlp_proto

    with pytest.raises(PassOptionError, match="verify='none'"):
        onnxpress.optimize(mlp_proto(), "cleanup", verify="none")  # type: ignore[arg-type]


@dataclasses.dataclass
class _DropOneIdentity(Pass):
    """Removes one Identity per run: changes the model as long as one is left."""

    name = "drop-one-identity"
    runs: int = dataclasses.field(default=0, repr=False)

    def run(self, model: ir.Model, ctx: PassContext):
        self.runs += 1
        node = next((n for n in model.graph if n.op_type == "Identity"), None)
        if node is None:
            return self.result(model, False)
        node.outputs[0].replace_all_uses_with(node.inputs[0], replace_graph_outputs=True)
        model.graph.remove(node, safe=True)
        return self.result(model, True)


@dataclasses.dataclass
class _Watcher(Pass):
    name = "watcher"
    runs: int = dataclasses.field(default=0, repr=False)

    def run(self, model: ir.Model, ctx: PassContext):
        self.runs += 1
        return self.result(model, False)


@pytest.mark.parametrize("through_manager", [True, False])
def test_fixpoint_reruns_a_pass_only_after_another_changed_the_model(through_manager: bool) -> None:
    """Two Identities: the dropper changes the model twice, then finds nothing. The watcher never changes
    anything, so it runs after each change (2) and not in the final round, where nothing changed since."""
    from onnxpress.irpasses.core.fixpoint import FixedPoint

    text = TEXT.replace("b = Identity(a)", "i = Identity(a)\n    b = Identity(i)")
    dropper, watcher = _DropOneIdentity(), _Watcher()
    group = FixedPoint(passes=[dropper, watcher])
    model = parse_model(text)
    if through_manager:
        _, report = PassManager([group]).run(model)
        assert [r.name for r in report.records] == ["drop-one-identity", "watcher", "drop-one-identity", "watcher", "drop-one-identity"]
    else:
        assert group.run(model, PassContext()).modified
    assert (dropper.runs, watcher.runs) == (3, 2)
    assert [n.op_type for n in model.graph if n.op_type == "Identity"] == []
