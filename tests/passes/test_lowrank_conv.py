"""lowrank on k x k convolutions: spatial SVD (k x 1 then 1 x k) and Tucker-2 (1x1 -> core -> 1x1) keep strides,
pads and dilations; the im2col statistics are those of the real patches; multiply-add budgets; the measured
cost model (with a stand-in timer: nothing here depends on timings)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.lowrank.conv import ConvGeometry, PatchGram

I, O, K = 32, 32, 3  # noqa: E741 - input / output channels and kernel size, as in the maths


def _conv_proto(kernel: np.ndarray, size: tuple[int, int] = (12, 14), group: int = 1, **attributes) -> onnx.ModelProto:
    bias = np.linspace(-1, 1, kernel.shape[0]).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W", "b"], ["y"], group=group, name="conv", **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, kernel.shape[1] * group, *size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(kernel, "W"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _inputs(count: int, channels: int = I, size: tuple[int, int] = (12, 14), seed: int = 0) -> list[dict[str, np.ndarray]]:
    mixing = np.random.default_rng(100).standard_normal((channels, channels)) * np.logspace(0, -2, channels)[:, None]  # one distribution
    rng = np.random.default_rng(seed)
    return [{"x": np.einsum("nchw,cd->ndhw", rng.standard_normal((1, channels, *size)), mixing).astype(np.float32)} for _ in range(count)]


def _outputs(model, samples) -> list[np.ndarray]:
    session = make_session(model, optimization="all")
    return [session.run(None, s)[0] for s in samples]


def _relative_error(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(reference, got, strict=True)) / sum((a**2).sum() for a in reference)))


def _separable(rank: int, seed: int = 0) -> np.ndarray:
    """A kernel whose [(I kh), (kw O)] matrix has rank ``rank``: exactly a k x 1 then 1 x k pair."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((I * K, rank)) @ rng.standard_normal((rank, K * O))
    return m.reshape(I, K, K, O).transpose(3, 0, 1, 2).astype(np.float32).copy()


def _tucker(r1: int, r2: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    core = rng.standard_normal((r2, r1, K, K))
    return np.einsum("os,srab,ri->oiab", rng.standard_normal((O, r2)), core, rng.standard_normal((r1, I))).astype(np.float32)


GEOMETRIES = [
    {"strides": [1, 1], "pads": [1, 1, 1, 1]},
    {"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2]},
    {"strides": [1, 2], "pads": [2, 1, 0, 1], "dilations": [2, 1]},
]


@pytest.mark.parametrize("attributes", GEOMETRIES)
def test_spatially_separable_kernel_becomes_kx1_then_1xk(attributes: dict) -> None:
    proto = _conv_proto(_separable(8), kernel_shape=[K, K], **attributes)
    samples = _inputs(6)  # at least as many patches as the 288 patch inputs: 70 a sample at stride 2
    model, report = onnxpress.optimize(proto, "lowrank{budget=params:0.5,multiple=8,cost_model=none}", samples=samples, verify="off")
    assert report.records[-1].stats["factorized"] == 1
    kernels = [tuple(n.attribute[[a.name for a in n.attribute].index("kernel_shape")].ints) for n in model.graph.node]
    assert kernels == [(K, 1), (1, K)]
    assert _relative_error(_outputs(proto, samples), _outputs(model, samples)) < 1e-4


@pytest.mark.parametrize("attributes", GEOMETRIES)
def test_tucker_kernel_becomes_pointwise_core_pointwise(attributes: dict) -> None:
    proto = _conv_proto(_tucker(8, 8), kernel_shape=[K, K], **attributes)
    samples = _inputs(6)  # at least as many patches as the 288 patch inputs: 70 a sample at stride 2
    model, _ = onnxpress.optimize(proto, "lowrank{budget=params:0.2,multiple=8,cost_model=none}", samples=samples, verify="off")
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    shapes = [weights[n.input[1]].shape for n in model.graph.node]
    assert shapes == [(8, I, 1, 1), (8, 8, K, K), (O, 8, 1, 1)]
    assert _relative_error(_outputs(proto, samples), _outputs(model, samples)) < 1e-4


def test_patch_statistics_are_those_of_the_real_patches() -> None:
    """E[y yᵀ] of the conv's real output equals Wᵀ E[p pᵀ] W: the patches are gathered where the conv reads."""
    attributes = GEOMETRIES[1]
    kernel = np.random.default_rng(3).standard_normal((O, I, K, K)).astype(np.float32)
    proto = _conv_proto(kernel, kernel_shape=[K, K], **attributes)
    proto.graph.node[0].input.pop()  # no bias: the output is W applied to the patches
    samples = _inputs(2, seed=4)
    gram = PatchGram(ConvGeometry.of(attributes, (K, K)), max_rows=10**6)
    for sample in samples:
        gram.update(sample["x"])
    outputs = np.concatenate([y.transpose(0, 2, 3, 1).reshape(-1, O) for y in _outputs(proto, samples)])
    w = kernel.reshape(O, -1).T.astype(np.float64)
    np.testing.assert_allclose(w.T @ gram.hessian() @ w, outputs.T.astype(np.float64) @ outputs / len(outputs), rtol=1e-3, atol=1e-3)


def test_whitened_beats_plain_svd_on_a_full_rank_kernel() -> None:
    kernel = np.random.default_rng(5).standard_normal((O, I, K, K)).astype(np.float32)
    proto = _conv_proto(kernel, kernel_shape=[K, K], pads=[1, 1, 1, 1])
    fit, judged = _inputs(6, seed=6), _inputs(3, seed=7)
    reference = _outputs(proto, judged)
    errors = {}
    for method in ("whitened", "svd"):
        spec = f"lowrank{{method={method},budget=params:0.4,multiple=8,cost_model=none}}"
        model, _ = onnxpress.optimize(proto, spec, samples=fit, verify="off")
        errors[method] = _relative_error(reference, _outputs(model, judged))
    assert errors["whitened"] < 0.7 * errors["svd"], errors


def test_depthwise_conv_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    kernel = np.random.default_rng(0).standard_normal((O, 1, K, K)).astype(np.float32)
    proto = _conv_proto(kernel, group=O, kernel_shape=[K, K], pads=[1, 1, 1, 1])
    with caplog.at_level(logging.WARNING, logger="onnxpress"):
        model, report = onnxpress.optimize(proto, "lowrank{min_elements=16,cost_model=none}", samples=_inputs(2, channels=O), verify="off")
    assert "no factorizable layer" in caplog.text
    assert [n.op_type for n in model.graph.node] == ["Conv"] and report.records[-1].stats["layers"] == 0


def _two_convs() -> onnx.ModelProto:
    """A stride-2 3x3 conv at 32x32 then a 3x3 conv at 16x16: the first holds 4x the second's MACs per weight."""
    rng = np.random.default_rng(8)
    w1, w2 = (rng.standard_normal((O, I, K, K)).astype(np.float32) for _ in range(2))
    nodes = [helper.make_node("Conv", ["x", "W1"], ["h"], kernel_shape=[K, K], pads=[1, 1, 1, 1], name="big"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "W2"], ["y"], kernel_shape=[K, K], strides=[2, 2], pads=[1, 1, 1, 1], name="small")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, I, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("keep", [0.7, 0.5, 0.3])
def test_macs_budget_is_met(keep: float) -> None:
    samples = _inputs(3, size=(32, 32), seed=9)
    _, report = onnxpress.optimize(_two_convs(), f"lowrank{{budget=macs:{keep},multiple=8,cost_model=none}}", samples=samples, verify="off")
    stats = report.records[-1].stats
    # both layers at 32x32 in / out except the second's 16x16 output: MACs are 32*32*W1 + 16*16*W2 weights
    assert stats["macs_before"] == 32 * 32 * O * I * 9 + 16 * 16 * O * I * 9
    assert stats["factorized"] >= 1 and stats["macs_after"] <= keep * stats["macs_before"]


def test_macs_budget_costs_no_more_error_than_a_params_cut_meeting_it() -> None:
    from onnxpress.irpasses.core.context import PassContext
    from onnxpress.irpasses.lowrank.lowrank import LowRank

    samples = _inputs(3, size=(32, 32), seed=9)
    results = {}
    for budget in ("macs:0.6", "params:0.6"):
        ctx = PassContext(samples=samples)
        stats = LowRank(budget=budget, multiple=8, cost_model="none").run(onnxpress.load(_two_convs()), ctx).stats
        results[budget] = (stats, sum(row["relative_error"] for row in ctx.extra["lowrank"]["layers"]))
    (macs, macs_error), (params, params_error) = results["macs:0.6"], results["params:0.6"]
    assert macs["macs_after"] <= 0.6 * macs["macs_before"] and params["params_after"] <= 0.6 * params["params_before"]
    assert params["macs_after"] <= 0.6 * params["macs_before"]  # the params cut meets the MACs budget too ...
    assert macs_error <= params_error  # ... and the MACs-budgeted one gets there with no more error


def _timer(factored_ms: float):
    """A stand-in timer: the whole layer (one node) 1 ms, any factorized form ``factored_ms``."""
    calls = []

    def timer(model, shape) -> float:
        calls.append(len(list(model.graph)))
        return 1.0 if len(list(model.graph)) == 1 else factored_ms

    return timer, calls


@pytest.mark.parametrize(("factored_ms", "factorized"), [(0.5, 1), (0.95, 0), (2.0, 0)])
def test_cost_model_keeps_only_forms_timed_faster(factored_ms: float, factorized: int) -> None:
    from onnxpress.irpasses.core.context import PassContext
    from onnxpress.irpasses.lowrank.lowrank import LowRank

    timer, calls = _timer(factored_ms)
    model = onnxpress.load(_conv_proto(_separable(8), kernel_shape=[K, K], pads=[1, 1, 1, 1]))
    result = LowRank(budget="params:0.5", multiple=8, timer=timer).run(model, PassContext(samples=_inputs(2)))
    assert result.stats["factorized"] == factorized
    assert 1 in calls and len(calls) >= 2  # the whole layer and at least one form were timed


def test_errors_of_the_curve_are_measured_output_errors() -> None:
    """The relative error the pass records for its choice is the output error it causes on the statistics' data."""
    from onnxpress.irpasses.core.context import PassContext
    from onnxpress.irpasses.lowrank.lowrank import LowRank

    kernel = np.random.default_rng(10).standard_normal((O, I, K, K)).astype(np.float32)
    proto = _conv_proto(kernel, kernel_shape=[K, K], pads=[1, 1, 1, 1])
    proto.graph.node[0].input.pop()
    samples = _inputs(3, seed=11)
    model = onnxpress.load(proto)
    ctx = PassContext(samples=samples)
    LowRank(budget="params:0.5", multiple=8, cost_model="none").run(model, ctx)
    (row,) = ctx.extra["lowrank"]["layers"]
    measured = _relative_error(_outputs(proto, samples), _outputs(model, samples)) ** 2
    assert row["relative_error"] == pytest.approx(measured, rel=0.1)


def _scaled_pair(scale: float) -> onnx.ModelProto:
    """Two equal 3x3 convs on one input; the second's output is multiplied by ``scale`` before the sum."""
    kernel = np.random.default_rng(12).standard_normal((O, I, K, K)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], kernel_shape=[K, K], pads=[1, 1, 1, 1], name="loud"),
             helper.make_node("Conv", ["x", "W2"], ["b"], kernel_shape=[K, K], pads=[1, 1, 1, 1], name="quiet"),
             helper.make_node("Mul", ["b", "s"], ["bs"]), helper.make_node("Add", ["a", "bs"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, I, 12, 14])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(kernel, "W1"), numpy_helper.from_array(kernel.copy(), "W2"),
                               numpy_helper.from_array(np.array(scale, np.float32), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_probing_weighs_layers_by_their_effect_on_the_outputs() -> None:
    """Equal layers, equal relative errors; the one whose output is scaled by 0.01 is cut first once probed."""
    from onnxpress.irpasses.core.context import PassContext
    from onnxpress.irpasses.lowrank.lowrank import LowRank

    samples = _inputs(4, seed=13)
    ranks = {}
    for probe in (True, False):
        ctx = PassContext(samples=samples)
        LowRank(budget="params:0.6", multiple=8, cost_model="none", probe=probe).run(onnxpress.load(_scaled_pair(0.01)), ctx)
        ranks[probe] = {row["layer"]: row for row in ctx.extra["lowrank"]["layers"]}
    probed = ranks[True]
    assert probed["quiet"]["output_weight"] < 0.01 * probed["loud"]["output_weight"]
    assert probed["quiet"]["relative_error"] > probed["loud"]["relative_error"]  # the quiet layer takes the deeper cut
    assert ranks[False]["quiet"]["output_weight"] == ranks[False]["loud"]["output_weight"] == 1.0


def test_bias_takes_the_mean_shift_of_a_matmul_with_add() -> None:
    """MatMul + Add(bias) on inputs with a large mean: the recorded (centered) error is the output error."""
    from onnxpress.irpasses.core.context import PassContext
    from onnxpress.irpasses.lowrank.lowrank import LowRank

    rng = np.random.default_rng(14)
    weight, bias = rng.standard_normal((64, 48)).astype(np.float32), rng.standard_normal(48).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"), helper.make_node("Add", ["h", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    offset = rng.standard_normal(64).astype(np.float32) * 5
    samples = [{"x": (rng.standard_normal((1, 16, 64)) + offset).astype(np.float32)} for _ in range(8)]
    model = onnxpress.load(proto)
    ctx = PassContext(samples=samples)
    LowRank(budget="params:0.5", multiple=8, cost_model="none", probe=False, min_elements=16).run(model, ctx)
    (row,) = ctx.extra["lowrank"]["layers"]
    reference, got = _outputs(proto, samples), _outputs(model, samples)
    h_ref = [r - bias for r in reference]  # the MatMul's own output energy is what the error is relative to
    error = sum(((a - b) ** 2).sum() for a, b in zip(reference, got, strict=True)) / sum((a**2).sum() for a in h_ref)
    assert row["form"] == "matrix" and row["relative_error"] == pytest.approx(error, rel=0.05)
    mean_error = np.abs(np.mean(np.concatenate(reference) - np.concatenate(got), axis=(0, 1))).max()
    assert mean_error < 1e-3 * np.abs(np.concatenate(reference)).mean()  # no mean shift left


@pytest.mark.parametrize("second", ["int8", "w4"])
def test_factors_of_a_conv_quantize(second: str) -> None:
    proto = _conv_proto(_separable(8), kernel_shape=[K, K], pads=[1, 1, 1, 1])
    samples = _inputs(4, seed=15)
    spec = f"lowrank{{budget=params:0.5,multiple=8,cost_model=none}},{second}"
    model, report = onnxpress.optimize(proto, spec, samples=samples, verify="off")
    assert next(r for r in report.records if r.name == "lowrank").stats["factorized"] == 1
    assert _relative_error(_outputs(proto, samples), _outputs(model, samples)) < 0.05


def test_cost_model_keeps_the_forms_below_the_measured_break_even() -> None:
    """A stand-in timer whose time grows with the weights a form holds: only forms holding at most 93 % of the
    whole layer's weights stay candidates, found by bisection over the hull (not by timing every form)."""
    from onnxpress.irpasses.lowrank.factor import hull
    from onnxpress.irpasses.lowrank.layers import candidates, find_layers
    from onnxpress.irpasses.lowrank.speed import FASTER, faster_choices

    model = onnxpress.load(_conv_proto(np.random.default_rng(16).standard_normal((O, I, K, K)).astype(np.float32),
                                       kernel_shape=[K, K], pads=[1, 1, 1, 1]))
    (layer,) = find_layers(model, [], 4096, 8)
    found = candidates(layer, None, "svd", 0.01, 8, ((1, I, 12, 14), (1, O, 12, 14)))
    whole, timed = O * I * K * K, []

    def timer(one_layer, shape) -> float:
        weights = sum(n.inputs[1].const_value.size for n in one_layer.graph)
        timed.append(weights)
        return weights / whole

    kept = faster_choices(found, (1, I, 12, 14), "params", timer, cache=None)
    assert kept and all(c.params <= FASTER * whole for c in kept)
    assert len(kept) < len(found.curve.choices)
    assert len(timed) < len(hull(found.curve, "params"))  # bisection: fewer timings than hull vertices


def test_timing_cache_measures_once_and_persists(tmp_path) -> None:
    from onnxpress.irpasses.lowrank.speed import TimingCache

    calls = []
    cache = TimingCache(tmp_path / "timing.json")
    assert cache.get("a", lambda: calls.append(1) or 2.0) == 2.0
    assert cache.get("a", lambda: calls.append(1) or 3.0) == 2.0
    cache.save()
    assert TimingCache(tmp_path / "timing.json").get("a", lambda: 5.0) == 2.0 and len(calls) == 1


def test_macs_budget_without_shapes_is_a_clear_error() -> None:
    from onnxpress.irpasses.core.errors import PassOptionError

    proto = _conv_proto(_separable(8), kernel_shape=[K, K], pads=[1, 1, 1, 1])
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"  # no samples, no static shapes
    with pytest.raises(PassOptionError, match="budget=macs"):
        onnxpress.optimize(proto, "lowrank{budget=macs:0.5,cost_model=none}", verify="off")
