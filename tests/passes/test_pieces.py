"""Piecewise execution for calibration: every node once per sample, exposed tensors bounded per piece."""

from __future__ import annotations

import numpy as np
import onnx
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.core.numerics import with_outputs
from onnxpress.irpasses.quant import pieces
from onnxpress.irpasses.quant.collect import collect_histograms, tensor_shapes

RNG = np.random.default_rng(0)


def residual_with_branch() -> onnx.ModelProto:
    """x -> MatMul a -> Relu r -> MatMul b -> Add(b, a) (a crosses pieces) -> If (its branches read r and s)."""
    w1 = numpy_helper.from_array(RNG.standard_normal((8, 8)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(RNG.standard_normal((8, 8)).astype(np.float32), "w2")
    then_branch = helper.make_graph([helper.make_node("Mul", ["s", "r"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Sub", ["s", "r"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["b"], name="second"),
        helper.make_node("Add", ["b", "a"], ["s"], name="residual"),
        helper.make_node("ReduceSum", ["s"], ["total"], name="total", keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["positive"], name="positive"),
        helper.make_node("If", ["positive"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch),
    ]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w1, w2, numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_pieces_reproduce_the_whole_model_run() -> None:
    model = onnxpress.load(residual_with_branch())
    wanted = ["a", "r", "b", "s", "y"]
    sample = {"x": RNG.standard_normal((1, 8)).astype(np.float32)}
    whole = make_session(with_outputs(model, wanted))
    expected = dict(zip([o.name for o in whole.get_outputs()], whole.run(None, sample)))
    plan = pieces.plan(model, wanted, max_exposed=1)
    assert len(plan) == 5
    indices = [i for piece in plan for i in piece.indices]
    assert sorted(indices) == indices == list(range(7))  # each node in exactly one piece, in order
    assert "a" in plan[0].carries and "a" in plan[3].reads  # the residual crosses three pieces
    assert {"r", "s"} <= set(plan[4].reads)  # the If's branches capture them from the main graph
    got: dict[str, np.ndarray] = {}
    pieces.run(model, plan, sample, got.__setitem__, make_session)
    assert set(got) == set(wanted)
    for name in wanted:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, err_msg=name)


def test_plan_runs_only_what_the_wanted_tensors_need() -> None:
    model = onnxpress.load(residual_with_branch())
    plan = pieces.plan(model, ["b"], sizes={"b": 32}, byte_budget=1)
    assert [p.indices for p in plan] == [[0, 1, 2]]  # the Add, ReduceSum and If are not ancestors of b


def test_budget_splits_by_measured_bytes() -> None:
    model = onnxpress.load(residual_with_branch())
    sizes = {"a": 32, "r": 32, "b": 32, "s": 32}
    assert len(pieces.plan(model, list(sizes), sizes, byte_budget=64)) == 2
    assert len(pieces.plan(model, list(sizes), sizes, byte_budget=1 << 20)) == 1


def test_histograms_do_not_depend_on_the_budget() -> None:
    proto = residual_with_branch()
    model = onnxpress.load(proto)
    samples = [{"x": RNG.standard_normal((1, 8)).astype(np.float32)} for _ in range(5)]
    names = ["x", "a", "r", "b", "s", "y"]
    small = collect_histograms(model, samples, names, byte_budget=1, channel_axes={"r": -1})
    large = collect_histograms(model, samples, names, channel_axes={"r": -1})
    for name in names:
        assert small[name].seen == large[name].seen == 5 * 8
        np.testing.assert_array_equal(small[name].counts, large[name].counts)
    relu = np.maximum(np.stack([s["x"][0] for s in samples]) @ numpy_helper.to_array(proto.graph.initializer[0]), 0)
    np.testing.assert_allclose(small["r"].channel_mean(), relu.mean(0), rtol=1e-5)


def test_means_only_statistics_skip_the_bins() -> None:
    model = onnxpress.load(residual_with_branch())
    samples = [{"x": RNG.standard_normal((1, 8)).astype(np.float32)} for _ in range(3)]
    stats = collect_histograms(model, samples, ["a"], channel_axes={"r": -1}, means_only=["r"])
    assert stats["a"].binned and stats["a"].counts.sum() == 24
    assert not stats["r"].binned and stats["r"].counts.size == 0 and stats["r"].channel_mean().shape == (8,)
    assert tensor_shapes(model, samples[0], ["x", "r"]) == {"x": (1, 8), "r": (1, 8)}


@pytest.mark.parametrize("budget", [1, 1 << 30])
def test_real_cnn_pieces_match_the_whole_run(budget: int) -> None:
    """PP-OCR cls (a real CNN with Conv/BN/HardSwish/SE blocks): piecewise tensors equal the whole run's."""
    from onnxpress.tools import real_models as R

    path = R.rapidocr_model("cls")
    model = onnxpress.load(str(path))
    wanted = [v.name for node in model.graph if node.op_type in ("Conv", "Add", "Mul") for v in node.outputs][:40]
    sample = {model.graph.inputs[0].name: RNG.standard_normal((1, 3, 48, 192)).astype(np.float32)}
    whole = make_session(with_outputs(model, wanted))
    expected = dict(zip([o.name for o in whole.get_outputs()], whole.run(None, sample)))
    sizes = {name: expected[name].nbytes for name in wanted}
    got: dict[str, np.ndarray] = {}
    pieces.run(model, pieces.plan(model, wanted, sizes, byte_budget=budget), sample, got.__setitem__, make_session)
    for name in wanted:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_shapes_from_inference_equal_a_run_and_the_rest_come_from_a_run() -> None:
    """The cost model's activation sizes come from shape inference with the sample's input shapes (PP-OCR cls,
    dynamic batch and width, after cleanup): equal to a run's; what inference cannot resolve comes from a run."""
    from onnxpress.irpasses.quant.collect import (
        ShapeOf,
        activation_tensors,
        inferred_shapes,
        stream_statistics,
    )
    from onnxpress.tools import real_models as R

    model, _ = onnxpress.optimize(onnxpress.load(str(R.rapidocr_model("cls"))), "optimize", verify="off")
    sample = {model.graph.inputs[0].name: RNG.standard_normal((1, 3, 48, 160)).astype(np.float32)}
    names = activation_tensors(model)
    ran = stream_statistics(model, [sample], {n: ShapeOf() for n in names}, show_progress=False)
    inferred = inferred_shapes(model, {k: v.shape for k, v in sample.items()}, names)
    assert inferred == {n: ran[n].shape for n in names}
    assert model.graph.inputs[0].shape is not None and not model.graph.inputs[0].shape.is_static()  # untouched

    # NonZero's output length depends on the data: inference leaves it symbolic, so its shape comes from a run
    nonzero = onnxpress.load(helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["nz"]), helper.make_node("Cast", ["nz"], ["f"], to=TensorProto.FLOAT)],
        "nz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [helper.make_tensor_value_info("f", TensorProto.FLOAT, None)],
    ), opset_imports=[helper.make_opsetid("", 17)]))
    assert inferred_shapes(nonzero, {"x": (4,)}, ["r", "f"]) == {"r": (4,)}
    assert tensor_shapes(nonzero, {"x": np.array([1, 0, 2, 0], dtype=np.float32)}, ["r", "f"]) == {"r": (4,), "f": (1, 2)}
