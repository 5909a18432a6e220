"""prune: N:M along the reduction axis of MatMul/Gemm/Conv weights (nm_positions accepts the result), magnitude
keeps values, Wanda follows the activations, SparseGPT's error feedback beats both on correlated inputs,
unstructured sparsity, im2col rows that match the kernel's order, the fidelity search, If bodies, and clear
errors for bad options and patterns that fit no layer."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.manager import PassManager
from onnxpress.irpasses.core.pipeline_text import build_passes
from onnxpress.irpasses.core.snapshot import snapshot
from onnxpress.irpasses.sparsity.prune import ConvGeometry, Prune, conv_view, patch_rows
from onnxpress.kernels import formats

K, N, ROWS = 64, 128, 32
CO, CI, KH = 32, 16, 3  # Conv: output and input channels, kernel size


def _proto(nodes: list, inputs: list, weights: dict[str, np.ndarray], opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _x(shape: list) -> list:
    return [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]


def _layer(kind: str, weight: np.ndarray, **attributes: int) -> onnx.ModelProto:
    """One MatMul (W [K, N]), Gemm (transB: B [N, K]) or 3x3 Conv (W [CO, CI, 3, 3]) named 'layer'."""
    if kind == "conv":
        node = helper.make_node("Conv", ["x", "W"], ["y"], name="layer", pads=[1, 1, 1, 1], **attributes)
        return _proto([node], _x([None, weight.shape[1] * attributes.get("group", 1), 8, 8]), {"W": weight})
    trans = {"transB": 1} if kind == "gemm" else {}
    node = helper.make_node("Gemm" if kind == "gemm" else "MatMul", ["x", "W"], ["y"], name="layer", **trans)
    return _proto([node], _x([None, weight.shape[1] if kind == "gemm" else weight.shape[0]]), {"W": weight})


def _weight(kind: str, seed: int = 0) -> np.ndarray:
    shape = {"matmul": (K, N), "gemm": (N, K), "conv": (CO, CI, KH, KH)}[kind]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _kn(kind: str, weight: np.ndarray) -> np.ndarray:
    """The weight as [reduction, outputs]."""
    return {"matmul": lambda w: w, "gemm": lambda w: w.T, "conv": lambda w: conv_view(w.shape).to_kn(w)}[kind](weight)


def _samples(kind: str, count: int = 8, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shape = (1, CI, 8, 8) if kind == "conv" else (ROWS, K)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


def _pruned(model: onnx.ModelProto, name: str = "W") -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _prune(proto: onnx.ModelProto, spec: str, samples: list | None = None) -> tuple[onnx.ModelProto, dict]:
    """Run the pass alone and return the model and ``ctx.extra['pruning']``."""
    ctx = PassContext(samples=samples)
    model = onnxpress.load(proto)
    PassManager(build_passes(spec), ctx=ctx).run(model)
    return ir.to_proto(model), ctx.extra["pruning"]


def _output_error(proto: onnx.ModelProto, reference: onnx.ModelProto, samples: list) -> float:
    """Relative squared output error over ``samples``."""
    got, ref = make_session(proto), make_session(reference)
    errors = [(got.run(None, s)[0], ref.run(None, s)[0]) for s in samples]
    return sum(float(((a - b) ** 2).sum()) for a, b in errors) / sum(float((b**2).sum()) for _, b in errors)


@pytest.mark.parametrize("kind", ["matmul", "gemm", "conv"])
def test_magnitude_2of4_keeps_the_largest_two_of_every_four_along_the_reduction_axis(kind: str) -> None:
    weight = _weight(kind)
    out, info = _prune(_layer(kind, weight), "prune{pattern=2:4,method=magnitude}")
    kn = _kn(kind, _pruned(out))
    formats.nm_positions(kn, 4, 2, "layer")  # raises when a group holds more than 2
    np.testing.assert_array_equal(kn, formats.magnitude_nm(_kn(kind, weight), 4, 2))  # kept values untouched
    assert np.count_nonzero(kn) == kn.size // 2 and info["sparsity"] == 0.5
    assert info["layers"][0]["reduction"] == (CI * KH * KH if kind == "conv" else K)


@pytest.mark.parametrize("kind", ["matmul", "gemm", "conv"])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_sparsegpt_and_wanda_give_exact_n_of_m(kind: str, n: int, m: int) -> None:
    weight = _weight(kind, 2)
    for method in ("sparsegpt", "wanda"):
        out, info = _prune(_layer(kind, weight), f"prune{{pattern={n}:{m},method={method}}}", _samples(kind))
        kn = _kn(kind, _pruned(out))
        formats.nm_positions(kn, m, n, "layer")
        assert np.count_nonzero(kn) == kn.size * n // m
        assert info["layers"][0]["method"] == method and 0 < info["layers"][0]["kept_importance"] < 1
        assert out.graph.initializer[0].data_type == TensorProto.FLOAT


def test_wanda_keeps_the_weights_of_inputs_with_large_activations() -> None:
    """Every fourth input channel carries 20x larger activations through 0.3x smaller weights: magnitude
    prunes those weights, Wanda keeps them, and the output error shows who was right."""
    rng = np.random.default_rng(3)
    loud = np.arange(K) % 4 == 0
    weight = rng.standard_normal((K, N)).astype(np.float32) * np.where(loud, 0.3, 1.0).astype(np.float32)[:, None]
    scale = np.where(loud, 20.0, 1.0).astype(np.float32)
    samples = [{"x": rng.standard_normal((ROWS, K)).astype(np.float32) * scale} for _ in range(12)]
    proto = _layer("matmul", weight)
    kept = {}
    errors = {}
    for method in ("magnitude", "wanda"):
        out, _ = _prune(proto, f"prune{{method={method}}}", samples[:8])
        kept[method] = float(np.mean(_pruned(out)[loud] != 0))
        errors[method] = _output_error(out, proto, samples[8:])
    assert kept["wanda"] > 0.85 and kept["magnitude"] < 0.2  # 0.91 and 0.13 measured
    assert errors["wanda"] < 0.1 * errors["magnitude"]  # 0.02 and 0.64


def _correlated(shape_of: tuple[int, ...], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Inputs whose channels are fixed mixtures of a few random sources: strongly correlated."""
    mix = np.random.default_rng(0).standard_normal((6, shape_of[1])).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        if len(shape_of) == 2:
            x = rng.standard_normal((shape_of[0], 6)).astype(np.float32) @ mix
        else:  # [1, C, H, W]: sources per pixel, mixed over channels
            x = np.einsum("shw,sc->chw", rng.standard_normal((6, *shape_of[2:])).astype(np.float32), mix)[None]
        out.append({"x": (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)})
    return out


@pytest.mark.parametrize("kind", ["matmul", "conv"])
def test_sparsegpt_beats_magnitude_and_wanda_on_correlated_inputs(kind: str) -> None:
    """With correlated inputs the kept weights can take over the pruned ones' work: SparseGPT's error feedback
    (and, for Conv, im2col rows in the kernel's order) must show it on held-out inputs."""
    weight = _weight(kind, 4)
    shape = (ROWS, K) if kind == "matmul" else (1, CI, 8, 8)
    calibration, held_out = _correlated(shape, 16, 5), _correlated(shape, 4, 6)
    proto = _layer(kind, weight)
    errors = {m: _output_error(_prune(proto, f"prune{{method={m}}}", calibration)[0], proto, held_out)
              for m in ("magnitude", "wanda", "sparsegpt")}
    assert errors["sparsegpt"] < 0.5 * min(errors["magnitude"], errors["wanda"]), errors  # matmul 0.009 vs 0.11, conv 0.05 vs 0.13


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_unstructured_prunes_the_share_asked_for(method: str, sparsity: float) -> None:
    out, info = _prune(_layer("matmul", _weight("matmul", 6)), f"prune{{pattern=unstructured,sparsity={sparsity},method={method}}}",
                       _samples("matmul"))
    share = float(np.mean(_pruned(out) == 0))
    assert abs(share - sparsity) < 0.01 and abs(info["sparsity"] - share) < 1e-9


@pytest.mark.parametrize(("spec", "message"), [
    ("prune{pattern=3:5}", "pattern='3:5' is not supported"),
    ("prune{pattern=4:4}", "pattern='4:4' is not supported"),
    ("prune{pattern=unstructured,sparsity=1.5}", r"sparsity=1.5 must be in \(0, 1\)"),
    ("prune{pattern=unstructured,sparsity=0}", r"sparsity=0.0 must be in \(0, 1\)"),
    ("prune{sparsity=0.7}", "sparsity=0.7 applies to pattern=unstructured only"),
    ("prune{method=random}", "expected one of auto, magnitude, wanda, sparsegpt"),
    ("prune{damp=0}", "damp=0.0 must be positive"),
])
def test_bad_options_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(onnxpress.irpasses.core.errors.PassOptionError, match=message):
        onnxpress.optimize(_layer("matmul", _weight("matmul")), spec, verify="off")


def test_calibration_data_that_does_not_fit_is_a_clear_error() -> None:
    proto = _layer("matmul", _weight("matmul"))
    with pytest.raises(onnxpress.irpasses.core.errors.DataError, match="'x'"):
        onnxpress.optimize(proto, "prune{method=wanda}", samples=[{"x": np.zeros((ROWS, K + 1), np.float32)}], verify="off")
    with pytest.raises(onnxpress.irpasses.core.errors.DataError, match="needs calibration data"):
        onnxpress.optimize(proto, "prune{method=sparsegpt}", verify="off")


def _two_layers(k2: int) -> onnx.ModelProto:
    """x [., 64] -> 'wide' MatMul [64, k2] -> 'odd' MatMul [k2, 1024]."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("MatMul", ["x", "A"], ["h"], name="wide"), helper.make_node("MatMul", ["h", "B"], ["y"], name="odd")]
    weights = {"A": rng.standard_normal((K, k2)).astype(np.float32), "B": rng.standard_normal((k2, 1024)).astype(np.float32)}
    return _proto(nodes, _x([None, K]), weights)


def test_a_pattern_that_fits_no_layer_is_an_error_naming_the_layer_and_nothing_changes() -> None:
    proto = _layer("matmul", np.random.default_rng(0).standard_normal((6, 1024)).astype(np.float32))
    before = proto.SerializeToString()
    with pytest.raises(onnxpress.irpasses.core.errors.PassOptionError,
                       match=r"pattern=2:4 fits no layer: layer \(reduction length 6 is not a multiple of 4"):
        onnxpress.optimize(proto, "prune{pattern=2:4}", verify="off")
    assert proto.SerializeToString() == before


def test_a_layer_the_pattern_does_not_divide_stays_dense_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    proto = _two_layers(66)  # 'odd' reduces over 66 = not a multiple of 4 (but of 2)
    with caplog.at_level(logging.WARNING, logger="onnxpress"):
        out, report = onnxpress.optimize(proto, "prune{pattern=2:4,method=magnitude}", verify="off")
    assert "odd (reduction length 66 is not a multiple of 4" in caplog.text
    stats = report.records[-1].stats
    assert stats["layers"] == 1 and stats["skipped"] == 1
    np.testing.assert_array_equal(_pruned(out, "B"), _pruned(proto, "B"))
    formats.nm_positions(_pruned(out, "A"), 4, 2)


def test_the_callers_model_and_arrays_are_not_modified() -> None:
    proto = _layer("matmul", _weight("matmul"))
    before = proto.SerializeToString()
    onnxpress.optimize(proto, "prune", samples=_samples("matmul"), verify="off")
    assert proto.SerializeToString() == before
    model = onnxpress.load(proto)
    copy = snapshot(model)  # shares the weight tensor with ``model``
    tensor = model.graph.initializers["W"].const_value
    original = tensor.numpy().copy()
    out, _ = onnxpress.optimize(model, "prune{method=sparsegpt}", samples=_samples("matmul"), verify="off")
    np.testing.assert_array_equal(tensor.numpy(), original)
    assert copy.graph.initializers["W"].const_value is tensor
    assert model.graph.initializers["W"].const_value is tensor  # optimize works on its own copy
    assert out.graph.initializers["W"].const_value is not tensor


def test_fidelity_search_keeps_the_sensitive_layer_dense() -> None:
    """'wide' is dense random (2:4 costs it a lot); 'tail' is 2:4 already but for tiny noise (free to prune):
    a tight target keeps 'wide' dense and prunes 'tail'."""
    rng = np.random.default_rng(8)
    tail = formats.magnitude_nm(rng.standard_normal((N, K)).astype(np.float32)) + 1e-4 * rng.standard_normal((N, K)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "A"], ["h"], name="wide"), helper.make_node("MatMul", ["h", "B"], ["y"], name="tail")]
    proto = _proto(nodes, _x([None, K]), {"A": rng.standard_normal((K, N)).astype(np.float32), "B": tail.astype(np.float32)})
    samples = _samples("matmul", 16)
    out, info = _prune(proto, 'prune{method=magnitude,fidelity="cosine>=0.999",eval_samples=4}', samples)
    assert info["dense"] == {"wide": "sensitive: kept dense"} and info["fidelity"]["met"]
    np.testing.assert_array_equal(_pruned(out, "A"), _pruned(proto, "A"))
    formats.nm_positions(_pruned(out, "B"), 4, 2)
    assert [r["node"] for r in info["layers"]] == ["tail"]


def _if_model() -> onnx.ModelProto:
    """y = If(cond, relu(x) @ W1, tanh(x) @ W2): outer-scope weights used inside the branches, on inputs
    computed there."""
    rng = np.random.default_rng(9)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["then_h"]),
                              helper.make_node("MatMul", ["then_h", "W1"], ["y"], name="then_mm")], "then", [], [out])
    other = helper.make_graph([helper.make_node("Tanh", ["x"], ["else_h"]),
                               helper.make_node("MatMul", ["else_h", "W2"], ["y"], name="else_mm")], "else", [], [out])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="branch")
    inputs = [*_x([None, K]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
    return _proto([node], inputs, {f"W{i}": rng.standard_normal((K, N)).astype(np.float32) for i in (1, 2)})


def test_if_bodies_are_pruned_and_a_branch_no_sample_took_falls_back_to_magnitude() -> None:
    samples = [{**s, "cond": np.array(True)} for s in _samples("matmul")]
    out, info = _prune(_if_model(), "prune{method=sparsegpt}", samples)
    for name in ("W1", "W2"):
        formats.nm_positions(_pruned(out, name), 4, 2, name)
    methods = {r["node"]: r["method"] for r in info["layers"]}
    assert methods == {"then_mm": "sparsegpt", "else_mm": "magnitude (no calibration statistics for its input)"}


@pytest.mark.parametrize("geometry", [
    dict(group=1, strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), kernel=(3, 3)),
    dict(group=2, strides=(2, 1), pads=(0, 2, 1, 0), dilations=(2, 1), kernel=(3, 2)),
    dict(group=4, strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1), kernel=(3, 3), auto_pad="SAME_UPPER"),
    dict(group=1, strides=(3, 1), pads=(0, 0, 0, 0), dilations=(1, 1), kernel=(2, 3), auto_pad="SAME_LOWER"),
    dict(group=2, strides=(2,), pads=(1, 2), dilations=(2,), kernel=(3,)),
])
def test_im2col_rows_times_the_kernel_view_give_the_conv_output(geometry: dict) -> None:
    """Row r of group g times the [I/g * k, O/g] view of that group's kernels is output position r: the
    statistics SparseGPT and Wanda use line up with the weights they prune."""
    rng = np.random.default_rng(10)
    group, kernel, auto_pad = geometry["group"], geometry["kernel"], geometry.get("auto_pad", "NOTSET")
    weight = rng.standard_normal((8, 8 // group, *kernel)).astype(np.float32)
    spatial = (9, 7)[: len(kernel)]
    x = rng.standard_normal((2, 8, *spatial)).astype(np.float32)
    attributes = dict(group=group, strides=list(geometry["strides"]), dilations=list(geometry["dilations"]))
    attributes.update(auto_pad=auto_pad) if auto_pad != "NOTSET" else attributes.update(pads=list(geometry["pads"]))
    proto = _proto([helper.make_node("Conv", ["x", "W"], ["y"], **attributes)], _x(list(x.shape)), {"W": weight})
    y = make_session(proto).run(None, {"x": x})[0]
    conv = next(iter(onnxpress.load(proto).graph))
    rows = patch_rows(x, ConvGeometry.of(conv, weight.shape), np.random.default_rng(0), 10**9)
    expected = np.moveaxis(y, 1, -1).reshape(-1, 8)
    view = conv_view(weight.shape).to_kn(weight)
    np.testing.assert_array_equal(conv_view(weight.shape).from_kn(view, weight.shape), weight)
    if len(kernel) == 2:  # channels innermost along K: TensorRT's 2:4 groups run along input channels
        np.testing.assert_array_equal(view[: weight.shape[1], 0], weight[0, :, 0, 0])
    for g in range(group):
        columns = slice(g * 8 // group, (g + 1) * 8 // group)
        np.testing.assert_allclose(rows[:, g] @ view[:, columns], expected[:, columns], rtol=1e-4, atol=1e-4)


def test_exclude_and_small_layers_stay_dense_and_are_listed() -> None:
    out, info = _prune(_two_layers(64), "prune{pattern=2:4,method=magnitude,exclude=[wide]}")
    assert info["skipped"] == {"wide": "excluded by 'wide'"}
    _, info = _prune(_two_layers(64), "prune{method=magnitude,min_elements=10000}")
    assert info["skipped"] == {"wide": "4096 weights, fewer than min_elements=10000"}


def test_sparse_2of4_pipeline_runs_with_sparsegpt() -> None:
    passes = build_passes("sparse-2of4")
    prune = next(p for p in passes if isinstance(p, Prune))
    assert prune.pattern == "2:4" and prune.method == "auto" and prune.fidelity
    nearly = formats.magnitude_nm(_weight("matmul"), 4, 2) + 1e-4 * np.random.default_rng(3).standard_normal((K, N)).astype(np.float32)
    out, report = onnxpress.optimize(_layer("matmul", nearly), "sparse-2of4", samples=_samples("matmul", 16), verify="off")
    record = next(r for r in report.records if r.name == "prune")
    assert record.stats["layers"] == 1 and record.stats["zeros"] == K * N // 2
    formats.nm_positions(_pruned(out), 4, 2)


@pytest.mark.slow
def test_minilm_2of4_on_every_encoder_matmul_sparsegpt_beats_wanda_beats_magnitude() -> None:
    """2:4 on all 36 MatMul weights of all-MiniLM-L6-v2, judged on held-out sentences against the float model.
    Measured (64 calibration / 128 held-out sentences): embedding cosine 0.626 / 0.759 / 0.869 and retrieval
    agreement 0.53 / 0.60 / 0.69 for magnitude / wanda / sparsegpt. Issue 15's bar (retrieval >= 0.95 with
    every MatMul at 2:4) is out of reach one-shot: each layer loses 2-5 % of its output energy and 36 of them
    compound. The bars here sit below those figures by margins a correct implementation keeps anywhere."""
    from onnxpress.tools import real_models as R
    from onnxpress.tools.bench.quant_suite import minilm_metrics

    path = str(R.minilm_onnx())
    calibration = R.minilm_samples(R.sentences(64, offset=0))
    held_out = R.minilm_samples(R.sentences(128, offset=300))
    reference = make_session(path)
    expected = [reference.run(None, s)[0] for s in held_out]
    metrics = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        model, report = onnxpress.optimize(path, f"optimize,prune{{pattern=2:4,method={method}}}", samples=calibration, verify="off")
        record = next(r for r in report.records if r.name == "prune")
        assert record.stats["layers"] == 36 and record.stats["zeros"] * 2 == record.stats["weights"]
        session = make_session(model)
        metrics[method] = minilm_metrics(expected, [session.run(None, s)[0] for s in held_out])
    cosine = {m: v["cosine_mean"] for m, v in metrics.items()}
    assert cosine["sparsegpt"] > 0.82 and cosine["sparsegpt"] > cosine["wanda"] + 0.05 > cosine["magnitude"] + 0.1, metrics
    assert metrics["sparsegpt"]["task"] > metrics["magnitude"]["task"] + 0.08, metrics


def test_sequential_takes_the_second_stage_statistics_from_the_pruned_first() -> None:
    """x -> MatMul(W1) -> Relu -> MatMul(W2): two stages. The second layer's SparseGPT update then answers the
    inputs the pruned first layer gives, so its weights differ from the one-run result; both keep 2:4 and the
    first layer, which sees the same inputs either way, is pruned identically."""
    rng = np.random.default_rng(7)
    weights = {"W1": rng.standard_normal((K, K)).astype(np.float32), "W2": rng.standard_normal((K, N)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="first"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="second")]
    proto = _proto(nodes, _x([None, K]), weights)
    samples = _correlated((ROWS, K), 16, 8)
    (seq, info), (one, one_info) = (_prune(proto, f"prune{{method=sparsegpt,sequential={flag}}}", samples) for flag in ("true", "false"))
    assert info["stages"] == 2 and one_info["stages"] == 1
    np.testing.assert_array_equal(_pruned(seq, "W1"), _pruned(one, "W1"))
    assert not np.array_equal(_pruned(seq, "W2"), _pruned(one, "W2"))
    for model in (seq, one):
        for name in ("W1", "W2"):
            formats.nm_positions(_pruned(model, name), 4, 2)
    np.testing.assert_array_equal(numpy_helper.to_array(proto.graph.initializer[1]), weights["W2"])  # the input is untouched
