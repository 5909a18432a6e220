"""Static QDQ, dynamic int8, embedding tables, mixed precision, and what bad calibration data is told."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.irpasses.core import DataError, PassOptionError
from onnxpress.irpasses.quant.qparams import activation_qparams, quantize_weight
from onnxpress.irpasses.quant.sensitivity import parse_fidelity
from onnxpress.tools.testing import conv_net_proto as conv_net
from onnxpress.tools.testing import mlp_proto, op_types, run

RNG = np.random.default_rng(0)
EVERY_LAYER = "min_macs=0,min_intensity=0"
"""The test nets are tiny: without this, qdq's cost model keeps every layer's activations float."""


def images(count: int) -> dict[str, np.ndarray]:
    return {"x": RNG.uniform(-1, 1, (count, 1, 3, 16, 16)).astype(np.float32)}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))


def test_activation_and_weight_parameters() -> None:
    qp = activation_qparams(-1.0, 3.0, "uint8")
    assert qp.dtype == ir.DataType.UINT8 and qp.zero_point == 64 and np.isclose(qp.scale, 4 / 255)
    relu = activation_qparams(0.5, 2.0, "uint8")  # widened to include 0: zero point 0 clamps like Relu
    assert relu.zero_point == 0
    q, wp = quantize_weight(np.array([[1.0, -2.0], [0.5, 4.0]], np.float32), axis=1)
    np.testing.assert_allclose(q * wp.scale, [[1.0, -2.0], [0.5, 4.0]], atol=4 / 254)


def test_qdq_quantizes_convs_keeps_the_score_head_float_and_stays_close() -> None:
    model = conv_net()
    calib, check = images(8), {"x": images(2)["x"]}
    out, report = onnxpress.optimize(onnxpress.load(model), f"qdq{{{EVERY_LAYER}}}", samples=calib, verify="off")
    ops = op_types(out)
    assert ops.count("QuantizeLinear") == 3  # x; conv1 out = conv2 in (Relu absorbed); conv2 out
    assert "Relu" not in ops
    head = next(n for n in out.graph if n.name == "head")
    assert head.inputs[1].const_value is not None  # the layer before the Sigmoid output stayed float
    float_model = onnxpress.load(model)
    for x in check["x"]:
        assert cosine(run(float_model, x=x)[0], run(out, x=x)[0]) > 0.999
    assert report.records[-1].stats["sites"] == 2 and report.records[-1].stats["relus_absorbed"] == 1


def test_qdq_runs_as_integer_kernels_in_onnxruntime(tmp_path) -> None:
    import onnxruntime as ort

    out, _ = onnxpress.optimize(onnxpress.load(conv_net()), f"qdq{{{EVERY_LAYER}}}", samples=images(4), verify="off")
    onnxpress.save(out, tmp_path / "q.onnx")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "ort.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), opts, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(tmp_path / "ort.onnx").graph.node]
    assert fused.count("QLinearConv") == 2


def test_tensorrt_placement_leaves_outputs_float() -> None:
    out, _ = onnxpress.optimize(onnxpress.load(conv_net()), "qdq{activations=int8}", samples=images(4), target="tensorrt", verify="off")
    assert op_types(out).count("QuantizeLinear") == 2 and "Relu" in op_types(out)


def test_exclusions_by_op_type_and_name_regex() -> None:
    out, _ = onnxpress.optimize(onnxpress.load(conv_net()), f"qdq{{exclude=[conv1],{EVERY_LAYER}}}", samples=images(4), verify="off")
    assert next(n for n in out.graph if n.name == "conv1").inputs[1].const_value is not None
    out, _ = onnxpress.optimize(onnxpress.load(conv_net()), f"qdq{{exclude=[Conv],{EVERY_LAYER}}}", samples=images(4), verify="off")
    assert "QuantizeLinear" not in op_types(out)


def test_fidelity_search_keeps_sensitive_layers_float_until_the_target_holds() -> None:
    from onnxpress.irpasses.core import PassContext, PassManager, build_passes

    model = onnxpress.load(conv_net())
    ctx = PassContext(samples=images(4))
    PassManager(build_passes(f'qdq{{fidelity="cosine>=0.99999999",keep_fragile=false,{EVERY_LAYER}}}'), ctx=ctx).run(model)
    info = ctx.extra["quantization"]
    assert [r["node"] for r in info["sensitivity"]] == ["conv1", "conv2", "head"]
    assert info["fidelity"]["met"] and info["fidelity"]["reached"] >= 0.99999999
    assert any(r["level"] != "full" for r in info["sensitivity"])


def test_low_opset_and_missing_calibration_data_are_explained() -> None:
    with pytest.raises(PassOptionError, match="opset >= 13"):
        onnxpress.optimize(onnxpress.load(conv_net(opset=12)), "qdq", samples=images(2), verify="off")
    with pytest.raises(DataError, match="needs calibration data"):
        onnxpress.optimize(onnxpress.load(conv_net()), "qdq", verify="off")
    with pytest.warns(UserWarning, match="random inputs"):
        onnxpress.optimize(onnxpress.load(conv_net()), "qdq{allow_random=true}", verify="off")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"image": np.zeros((2, 1, 3, 16, 16), np.float32)}, "missing x; unknown image"),
        ({"x": np.zeros((2, 1, 3, 8, 16), np.float32)}, "input 'x' axis 2 is 8, the model expects 16"),
        ({"x": np.zeros((2, 1, 3, 16, 16), np.float64)}, "input 'x' has dtype float64, the model expects float32"),
        ({"x": np.zeros((2, 3, 16, 16), np.float32)}, "input 'x' has rank 3"),
        ({"x": np.zeros((0, 1, 3, 16, 16), np.float32)}, "empty"),
    ],
)
def test_bad_calibration_data_names_the_input_and_what_was_expected(data: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        onnxpress.optimize(onnxpress.load(conv_net()), "qdq", samples=data, verify="off")


def embedding_mlp() -> onnx.ModelProto:
    table = numpy_helper.from_array(np.random.default_rng(7).standard_normal((512, 16)).astype(np.float32), "table")
    base = mlp_proto(hidden=512)
    graph = base.graph
    graph.initializer.append(table)
    gather = helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed")
    graph.node.insert(0, gather)
    graph.node.append(helper.make_node("ReduceMean", ["emb"], ["pooled"], name="pool", axes=[1], keepdims=0))
    graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 5]))
    graph.output.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 16]))
    return base


def test_dynamic_quant_uses_integer_matmuls_and_int8_tables() -> None:
    model = embedding_mlp()
    out, report = onnxpress.optimize(onnxpress.load(model), "dynamic-quant{min_elements=1024}", verify="off")
    ops = op_types(out)
    assert ops.count("MatMulInteger") == 2 and ops.count("DynamicQuantizeLinear") == 2
    assert "table" not in out.graph.initializers  # the float table is gone, int8 rows replace it
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    ids = RNG.integers(0, 512, (3, 5)).astype(np.int64)
    ref, got = run(onnxpress.load(model), x=x, ids=ids), run(out, x=x, ids=ids)
    assert cosine(ref[0], got[0]) > 0.999 and cosine(ref[1], got[1]) > 0.9999
    assert report.records[-1].stats["embeddings_quantized"] == 1


@pytest.mark.parametrize("cpu", ["portable", "vnni"])
@pytest.mark.parametrize("target", ["0.9999", "0.99995", "0.99"])
def test_dynamic_quant_fidelity_search_takes_sensitive_matmuls_out(target: str, cpu: str) -> None:
    from onnxpress.frontends.sample_data import as_samples
    from onnxpress.irpasses.core import PassContext, PassManager, build_passes

    rng = np.random.default_rng(3)
    samples = {"x": rng.standard_normal((4, 3, 8)).astype(np.float32), "ids": rng.integers(0, 512, (4, 3, 5)).astype(np.int64)}
    model = onnxpress.load(embedding_mlp())
    reference = onnxpress.load(embedding_mlp())
    ctx = PassContext(samples=as_samples(samples), cpu=cpu)
    ctx.extra["sensitivity_table"] = True  # the per-layer levels below, even where every layer at full meets the target
    PassManager(build_passes(f'dynamic-quant{{min_elements=1024,fidelity="cosine>={target}"}}'), ctx=ctx).run(model)
    info = ctx.extra["quantization"]
    levels = {r["node"]: r["level"] for r in info["sensitivity"]}
    ops = op_types(model)
    assert ops.count("MatMulInteger") == sum(level == "full" for level in levels.values())
    assert ops.count("MatMul") == sum(level != "full" for level in levels.values())
    reduced = sum(level == "reduced" for level in levels.values())
    # weight-only: DequantizeLinear (MatMulNBits, fast with VNNI), else Cast * scale folded to float at load
    folded = sum(n.op_type == "Cast" and n.name.endswith("_weight_int8_Cast") for n in model.graph)
    assert (ops.count("DequantizeLinear"), folded) == ((reduced, 0) if cpu == "vnni" else (0, reduced))
    assert info["cpu"]["weight_max"] == (127 if cpu == "vnni" else 64)
    assert info["fidelity"]["met"]
    x, ids = samples["x"][0], samples["ids"][0]
    assert cosine(run(reference, x=x, ids=ids)[0], run(model, x=x, ids=ids)[0]) >= float(target) - 1e-6


def test_fidelity_text_is_validated() -> None:
    assert parse_fidelity("cosine>=0.995")[1] == 0.995
    assert parse_fidelity("max_abs<=0.01")[1] == -0.01
    with pytest.raises(PassOptionError, match="not understood"):
        parse_fidelity("accuracy>0.9")
    from onnxpress.irpasses.core import build_passes

    for name in ("qdq", "dynamic-quant", "weight-only", "auto-quant"):  # refused when the pipeline is built
        with pytest.raises(PassOptionError, match="'cosine>0.9' is not understood"):
            build_passes(f'{name}{{fidelity="cosine>0.9"}}')


def test_gptq_rounding_cuts_the_int8_layer_output_error_on_correlated_inputs() -> None:
    rng = np.random.default_rng(1)
    k, n = 256, 64
    mixing = rng.standard_normal((8, k)).astype(np.float32)

    def inputs(count: int) -> np.ndarray:
        return (rng.standard_normal((count, 8)) @ mixing + 0.05 * rng.standard_normal((count, k))).astype(np.float32)

    w = rng.standard_t(4, (k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    calibration, held_out = [{"x": inputs(4)} for _ in range(32)], inputs(64)
    errors = {}
    for rounding in ("nearest", "gptq"):
        spec = f"qdq{{rounding={rounding},keep_fragile=false,bias_correction=false,{EVERY_LAYER}}}"
        out, report = onnxpress.optimize(onnxpress.load(model), spec, samples=calibration, verify="off")
        assert report.records[-1].stats["gptq_weights"] == (rounding == "gptq")
        errors[rounding] = sum(np.linalg.norm(run(out, x=x)[0] - x @ w) for x in held_out.reshape(16, 4, k))
    assert errors["gptq"] < 0.8 * errors["nearest"], errors


def _two_consumer_matmuls(k: int = 64, n: int = 64) -> onnx.ModelProto:
    """x feeds two MatMuls (like q and k) and a residual Add: smoothing must leave the Add's input alone."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
        helper.make_node("MatMul", ["x", "w2"], ["b"], name="mm2"),
        helper.make_node("Add", ["a", "b"], ["ab"], name="sum"),
        helper.make_node("Add", ["ab", "x"], ["y"], name="residual"),
    ]
    weights = [numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32) / 8, f"w{i}") for i in (1, 2)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, n])], weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_smooth_quant_is_exact_in_float_and_cuts_int8_error_from_outlier_channels() -> None:
    rng = np.random.default_rng(6)

    def activations(count: int) -> np.ndarray:
        x = rng.standard_normal((count, 1, 6, 64)).astype(np.float32)
        x[..., [3, 17, 40]] *= 60.0  # a few outlier channels, as in transformer activations
        return x

    calibration, held_out = {"x": activations(8)}, activations(4)
    model = _two_consumer_matmuls()
    smoothed, report = onnxpress.optimize(onnxpress.load(model), "smooth-quant{min_elements=16}", samples=calibration)
    assert report.records[-1].stats == {"inputs_smoothed": 1, "matmuls": 2}  # one shared scale for both MatMuls
    reference = onnxpress.load(model)
    for x in held_out:  # exact in float: only the MatMul branch sees x / s, the residual sees x
        np.testing.assert_allclose(run(smoothed, x=x)[0], run(reference, x=x)[0], rtol=1e-4, atol=1e-4)
    errors = {}
    for label, pipeline in (("plain", "dynamic-quant{min_elements=16}"), ("smoothed", "smooth-quant{min_elements=16},dynamic-quant{min_elements=16}")):
        # full int8 weights (cpu=vnni): what is measured is smoothing's effect on the activation step
        out, _ = onnxpress.optimize(onnxpress.load(model), pipeline, samples=calibration, verify="off", cpu="vnni")
        errors[label] = sum(np.linalg.norm(run(out, x=x)[0] - run(reference, x=x)[0]) for x in held_out)
    assert errors["smoothed"] < 0.5 * errors["plain"], errors


def test_dynamic_quant_smooths_only_the_layers_it_quantizes_in_full() -> None:
    """dynamic-quant{smooth=...} equals smooth-quant then dynamic-quant on the layers it quantizes, and a layer
    kept out (here by name) reads the original x and its original float weight: smoothing would only make
    its weights harder to round."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 1, 6, 64)).astype(np.float32)
    x[..., [3, 17, 40]] *= 60.0
    calibration, held_out = {"x": x[:8]}, x[8:]
    model = _two_consumer_matmuls()
    reference = onnxpress.load(model)
    outputs = {}
    for label, pipeline in (
        ("separate", "smooth-quant{min_elements=16},dynamic-quant{min_elements=16}"),
        ("built in", "dynamic-quant{min_elements=16,smooth=0.8}"),
        ("plain", "dynamic-quant{min_elements=16}"),
    ):
        # full int8 weights (cpu=vnni): what is measured is smoothing's effect on the activation step
        out, _ = onnxpress.optimize(onnxpress.load(model), pipeline, samples=calibration, verify="off", cpu="vnni")
        outputs[label] = [run(out, x=h)[0] for h in held_out]
    for a, b in zip(outputs["separate"], outputs["built in"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    error = {k: sum(np.linalg.norm(o - run(reference, x=h)[0]) for o, h in zip(v, held_out)) for k, v in outputs.items()}
    assert error["built in"] < 0.5 * error["plain"], error

    out, report = onnxpress.optimize(onnxpress.load(model), "dynamic-quant{min_elements=16,smooth=0.8,exclude=[mm2]}", samples=calibration, verify="off")
    assert report.records[-1].stats["matmuls_quantized"] == 1
    mm2 = next(n for n in out.graph if n.name == "mm2")
    assert mm2.inputs[0].name == "x" and mm2.inputs[1].name == "w2"  # untouched: original input and weight
    smooth = [n for n in out.graph if n.op_type == "Mul" and n.name.endswith("_smooth")]
    assert len(smooth) == 1 and smooth[0].outputs[0].consumers()[0].op_type == "DynamicQuantizeLinear"


def test_outlier_channels_take_a_float_path_and_stop_setting_the_int8_step() -> None:
    """Three channels at 60x the others: dynamic-quant{outliers=6} multiplies them in float (Gather -> MatMul
    -> Add), masks them out of the int8 input and zeroes their int8 weight rows; the rest keeps a fine step."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((12, 1, 6, 256)).astype(np.float32)
    x[..., [3, 17, 40]] *= 60.0
    calibration, held_out = {"x": x[:8]}, x[8:]
    model = _two_consumer_matmuls(k=256, n=256)
    reference = onnxpress.load(model)
    errors = {}
    for label, options in (("plain", ""), ("outliers", ",outliers=6")):
        out, _ = onnxpress.optimize(onnxpress.load(model), f"dynamic-quant{{min_elements=16{options}}}", samples=calibration, verify="off")
        errors[label] = sum(np.linalg.norm(run(out, x=h)[0] - run(reference, x=h)[0]) for h in held_out)
    assert errors["outliers"] < 0.2 * errors["plain"], errors
    gathers = [n for n in out.graph if n.op_type == "Gather"]
    assert len(gathers) == 2 and all(g.inputs[0].name == "x" for g in gathers)  # both MatMuls read the original x
    assert gathers[0].inputs[1].const_value.numpy().tolist() == [3, 17, 40]
    masked = next(n for n in out.graph if n.name == "x_smooth").inputs[1].const_value.numpy()
    assert masked[[3, 17, 40]].tolist() == [0, 0, 0] and np.all(np.delete(masked, [3, 17, 40]) == 1)
    matmul = next(n for n in out.graph if n.op_type == "MatMulInteger")  # portable: uint8 codes, zero point 128
    codes = matmul.inputs[1].const_value.numpy().astype(np.int16) - matmul.inputs[3].const_value.numpy().astype(np.int16)
    assert not codes[[3, 17, 40]].any()


def test_weight_only_level_also_takes_outlier_channels_in_float() -> None:
    """A layer the fidelity search sets to weight-only keeps the unsmoothed weight, but its outlier channels
    are masked out of the int8 weight and the input (MatMulNBits quantizes activations per block of 32)
    and multiplied in float, as at full level."""
    from onnxpress.irpasses.core import PassContext
    from onnxpress.irpasses.quant.dynamic import DynamicQuant
    from onnxpress.irpasses.quant.sensitivity import FULL, REDUCED

    rng = np.random.default_rng(8)
    x = rng.standard_normal((8, 1, 6, 256)).astype(np.float32)
    x[..., [3, 17, 40]] *= 60.0
    model = onnxpress.load(_two_consumer_matmuls(k=256, n=256))
    reference = onnxpress.load(_two_consumer_matmuls(k=256, n=256))
    from onnxpress.irpasses.quant.cpu_target import integer_target

    quant = DynamicQuant(min_elements=16, smooth=0.5, outliers=6)
    quant._cache, quant._scaling = {}, quant._plan_scaling(model, PassContext(samples=[{"x": s} for s in x]))
    quant._integer = integer_target(None, "vnni")  # weight-only as DequantizeLinear (MatMulNBits)
    quant._quantize(model, {"mm1": REDUCED, "mm2": FULL})
    ops = [n.op_type for n in model.graph]
    assert ops.count("Gather") == 2 and ops.count("DequantizeLinear") == 1 and ops.count("DynamicQuantizeLinear") == 1
    mask = next(n for n in model.graph if n.name == "x_outlier_mask")
    assert mask.outputs[0].consumers()[0].op_type == "MatMul"  # the weight-only MatMul reads the masked x
    weight = next(n for n in model.graph if n.op_type == "DequantizeLinear").inputs[0].const_value.numpy()
    assert not weight[[3, 17, 40]].any()
    error = np.linalg.norm(run(model, x=x[0])[0] - run(reference, x=x[0])[0]) / np.linalg.norm(run(reference, x=x[0])[0])
    assert error < 0.01, error


def test_small_layers_keep_float_activations_and_int8_weights_folded_at_load(tmp_path) -> None:
    """onnxruntime's cost model: below min_macs / min_intensity a layer gets no Q/DQ, only int8 weights behind
    Cast*scale, which onnxruntime folds into float constants when the session loads."""
    import onnxruntime as ort

    out, report = onnxpress.optimize(onnxpress.load(conv_net()), "qdq", samples=images(4), verify="off")
    ops = op_types(out)
    assert "QuantizeLinear" not in ops and ops.count("Cast") == 2  # conv1, conv2 (the head is fragile: float)
    int8 = [v for v in out.graph.initializers.values() if v.const_value.dtype == ir.DataType.INT8]
    assert len(int8) == 2
    reasons = report.to_dict()["quantization"]["kept_float"]
    assert "MACs" in reasons["conv1"] and "MACs" in reasons["conv2"]
    onnxpress.save(out, tmp_path / "q.onnx")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "ort.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), opts, providers=["CPUExecutionProvider"])
    assert not {"Cast", "Mul"} & {n.op_type for n in onnx.load(tmp_path / "ort.onnx").graph.node}  # folded at load
    float_model = onnxpress.load(conv_net())
    for x in images(2)["x"]:
        assert cosine(run(float_model, x=x)[0], run(out, x=x)[0]) > 0.9999
    # the same layers with a big enough budget, or for TensorRT (which fuses every Q/DQ), are fully quantized
    out, _ = onnxpress.optimize(onnxpress.load(conv_net()), "qdq{min_macs=1000,min_intensity=1}", samples=images(4), verify="off")
    assert "QuantizeLinear" in op_types(out)


def test_reduced_only_layers_are_group_tested_and_the_culprit_found() -> None:
    """Layers with no full level (the cost model's small ones) are scored in halving groups: the seven that
    barely move the output cost a few evaluations together; the one that breaks the target alone is found,
    scored on its own and kept float."""
    from onnxpress.irpasses.core import PassContext
    from onnxpress.irpasses.quant import sensitivity

    count, bad = 8, "mm5"
    weights = [numpy_helper.from_array((np.eye(8) + 0.1 * RNG.standard_normal((8, 8))).astype(np.float32), f"w{i}") for i in range(count)]
    nodes = [helper.make_node("MatMul", [f"h{i}" if i else "x", f"w{i}"], [f"h{i + 1}" if i < count - 1 else "y"], name=f"mm{i}") for i in range(count)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], weights)
    model = onnxpress.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    noise = {f"mm{i}": np.random.default_rng(i).standard_normal((8, 8)).astype(np.float32) for i in range(count)}

    def quantize(clone: ir.Model, levels: dict[str, str]) -> None:  # a stand-in for int8 weights: noise
        for node in clone.graph:
            if levels.get(node.name, sensitivity.FLOAT) != sensitivity.FLOAT:
                w = node.inputs[1]
                amount = 0.5 if node.name == bad else 1e-4
                w.const_value = ir.tensor(w.const_value.numpy() + amount * noise[node.name], name=w.name)

    samples = [{"x": RNG.standard_normal((4, 8)).astype(np.float32)} for _ in range(2)]
    layers = [(f"mm{i}", "MatMul") for i in range(count)]
    result = sensitivity.search(model, PassContext(), layers=layers, quantize=quantize, samples=samples,
                                metric=sensitivity.cosine, threshold=0.999, reduced_only=frozenset(n for n, _ in layers))
    rows = {r.node: r for r in result.table}
    assert [r.node for r in result.table] == [n for n, _ in layers]
    assert rows[bad].alone and rows[bad].score < 0.999 and rows[bad].level == sensitivity.FLOAT
    assert {n: r.level for n, r in rows.items() if r.level != sensitivity.FULL} == {bad: sensitivity.FLOAT}  # full = reduced here
    # halving: [0-7] fails, [0-3] passes, [4-7] fails, [4,5] fails, mm4 and mm5 alone, [6,7] passes
    assert [n for n, r in rows.items() if r.alone] == ["mm4", bad]
    assert result.met


@pytest.mark.parametrize(("proto", "fallback"), [("conv", False), ("conv", True), ("mlp", False), ("mlp", True)])
def test_auto_quant_falls_back_to_int8_weights_when_int8_is_not_faster(proto: str, fallback: bool) -> None:
    """auto times its result against the float model; when it is not faster (here: a timer that says so) the
    model gets int8 weights folded to float at load instead, with no integer op left, and the report says so."""
    from onnxpress.irpasses.core import PassContext, PassManager
    from onnxpress.irpasses.quant.auto import AutoQuant

    calls = []

    def timer(models: dict, sample: dict) -> dict[str, float]:
        calls.append(sorted(models))
        return {"float": 1.0, "quantized": 1.5 if fallback else 0.5}

    proto_model = conv_net() if proto == "conv" else wide_mlp()
    model, reference = onnxpress.load(proto_model), onnxpress.load(proto_model)
    samples = images(4) if proto == "conv" else {"x": RNG.standard_normal((4, 2, 64)).astype(np.float32)}
    ctx = PassContext(samples=samples)
    PassManager([AutoQuant(timer=timer)], ctx=ctx).run(model)
    # a static result not clearly faster is also tried under the measured cost model (timed again)
    assert calls == [["float", "quantized"]] * (2 if fallback and proto == "conv" else 1)
    auto, ops = ctx.extra["quantization"]["auto"], set(op_types(model))
    assert ("fallback" in auto) == fallback and auto["latency_ms"]["quantized"] == (1.5 if fallback else 0.5)
    integer_ops = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "DequantizeLinear"}
    if fallback:  # every layer's weight int8 (a quarter of the bytes), no integer op
        assert not integer_ops & ops
        float_bytes = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value.dtype == ir.DataType.FLOAT)
        assert float_bytes < 0.5 * sum(v.const_value.nbytes for v in reference.graph.initializers.values())
    elif proto == "mlp":  # (the small conv net keeps float activations by the cost model either way)
        assert "MatMulInteger" in ops
    x = {k: v[0] for k, v in samples.items()}
    assert cosine(run(reference, **x)[0], run(model, **x)[0]) > 0.999


@pytest.mark.parametrize(("measured_ratio", "kept"), [(0.5, "measured"), (0.88, "rule")])
def test_auto_quant_tries_the_measured_cost_model_when_the_rule_is_not_clearly_faster(measured_ratio: float, kept: str) -> None:
    """cost_model=auto: a rule-based result at 0.9x float makes auto quantize again under the measured cost
    model; that result is kept only when clearly faster (< 0.93x the rule's time), else the rule's comes back
    with its report."""
    from onnxpress.irpasses.core import PassContext, PassManager
    from onnxpress.irpasses.quant.auto import AutoQuant

    ratios = iter([0.9, measured_ratio])

    def timer(models: dict, sample: dict) -> dict[str, float]:
        return {"float": 10.0, "quantized": 10.0 * next(ratios)}

    model = onnxpress.load(conv_net())
    ctx = PassContext(samples=images(4))
    PassManager([AutoQuant(timer=timer)], ctx=ctx).run(model)
    auto = ctx.extra["quantization"]["auto"]
    assert auto["cost_model"] == kept and auto["latency_ratio_tried"] == pytest.approx({"rule": 0.9, "measured": measured_ratio})
    assert auto["latency_ms"]["quantized"] == pytest.approx(5.0 if kept == "measured" else 9.0) and "fallback" not in auto
    assert "fidelity" in ctx.extra["quantization"] and ctx.extra["quantization"]["cpu"]["cpu"] == "portable"


def wide_mlp() -> onnx.ModelProto:
    """Two 64x64 MatMuls with a Relu between (weights large enough for dynamic-quant's 4,096-element floor)."""
    weights = [numpy_helper.from_array((0.2 * RNG.standard_normal((64, 64))).astype(np.float32), f"w{i}") for i in range(2)]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="mm0"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w1"], ["y"], name="mm1")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("proto", "target", "expected"), [("conv", None, "static"), ("mlp", None, "dynamic"), ("mlp", "tensorrt", "static")])
def test_auto_quant_picks_static_for_convolutions_and_dynamic_for_matmuls(proto: str, target: str | None, expected: str) -> None:
    from onnxpress.irpasses.core import PassContext, PassManager, build_passes

    model = onnxpress.load(conv_net() if proto == "conv" else wide_mlp())
    samples = images(4) if proto == "conv" else {"x": RNG.standard_normal((4, 2, 64)).astype(np.float32)}
    ctx = PassContext(samples=samples, target=target)
    PassManager(build_passes("auto-quant{latency_check=false}"), ctx=ctx).run(model)  # the choice, not its timing here
    info = ctx.extra["quantization"]
    assert info["auto"]["method"] == expected
    assert info["fidelity"]["met"]
    ops = op_types(model)
    if expected == "dynamic":
        assert "DynamicQuantizeLinear" in ops or "DequantizeLinear" in ops
    else:
        assert "DynamicQuantizeLinear" not in ops
        assert any(v.const_value.dtype == ir.DataType.INT8 for v in model.graph.initializers.values())
        if target == "tensorrt":
            assert "QuantizeLinear" in ops  # no cost model for TensorRT: activations quantized too


def test_measured_cost_model_times_each_layer_float_against_fused_int8(tmp_path) -> None:
    """cost_model=measured: each layer alone, float vs its int8 form, which onnxruntime must fuse into an
    integer kernel (or the timing would compare two float runs)."""
    import onnxruntime as ort
    from onnxpress.irpasses.quant.layer_timing import _one_layer, time_layer

    model = onnxpress.load(conv_net())
    conv = next(n for n in model.graph if n.op_type == "Conv")
    int8 = _one_layer(conv, (1, 3, 16, 16), True, 0)
    onnxpress.save(int8, tmp_path / "layer.onnx", max_ir_version=10)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(str(tmp_path / "layer.onnx"), options, providers=["CPUExecutionProvider"])
    assert "QLinearConv" in {n.op_type for n in onnx.load(tmp_path / "fused.onnx").graph.node}
    float_ms, int8_ms = time_layer(conv, (1, 3, 16, 16), 0, budget_s=0.0, rounds=3)
    assert float_ms > 0 and int8_ms > 0
    out, report = onnxpress.optimize(onnxpress.load(conv_net()), "qdq{cost_model=measured}", samples=images(4), verify="off")
    reasons = report.to_dict()["quantization"]["kept_float"]
    assert "head" in reasons  # fragile, whatever the timing
    assert all("int8 not faster here" in why for name, why in reasons.items() if name != "head")
    float_model = onnxpress.load(conv_net())
    for x in images(2)["x"]:
        assert cosine(run(float_model, x=x)[0], run(out, x=x)[0]) > 0.999


def test_measured_cost_model_times_a_gemm_with_a_broadcast_bias() -> None:
    """A Gemm's C may be [1, N] (magika's classifier head): its timing model keeps that bias float instead of
    building a per-axis DequantizeLinear onnxruntime refuses."""
    from onnxpress.irpasses.quant.layer_timing import time_layer

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal((1, 32)).astype(np.float32), "c")],
    )
    model = onnxpress.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    gemm = next(iter(model.graph))
    float_ms, int8_ms = time_layer(gemm, (1, 64), 0, budget_s=0.0, rounds=2)
    assert float_ms > 0 and int8_ms > 0


@pytest.mark.parametrize(
    ("pipeline", "target", "body_ops"),
    [
        ("qdq", None, None),
        ("dynamic-quant", None, {"MatMulInteger"}),
        ("dynamic-quant{smooth=0.5,outliers=6}", None, {"MatMulInteger", "Mul"}),  # statistics of the body's input
        ('dynamic-quant{fidelity="cosine>=0.99"}', None, {"MatMulInteger"}),
        ("weight-only{method=rtn}", "ort", {"MatMulNBits"}),
        ("weight-only{method=gptq}", "ort", {"MatMulNBits"}),  # GPTQ's statistics of the body's input
        ("convert-opset{min=21},weight-only{method=rtn}", None, {"MatMul"}),  # blocked DQ in the main graph
    ],
)
def test_every_quantization_pass_enters_if_bodies(pipeline: str, target: str | None, body_ops: set[str] | None) -> None:
    """silero-vad keeps its whole network in an If: every quantization pass quantizes the layers in bodies,
    those that need activation statistics through values passed out of the body (see test_quant_bodies)."""
    w = numpy_helper.from_array(RNG.standard_normal((64, 64)).astype(np.float32), "w")
    then_branch = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)], "nested",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    samples = {"x": RNG.standard_normal((4, 2, 64)).astype(np.float32), "c": np.array([True, False, True, True])}
    out, report = onnxpress.optimize(proto, pipeline, samples=samples, verify="off", target=target)
    stats = report.records[-1].stats
    assert stats.get("sites", stats.get("matmuls_quantized")) == 1, pipeline
    model = onnxpress.load(out)
    body = list(next(n for n in model.graph if n.op_type == "If").attributes["then_branch"].value)
    if body_ops is not None:
        assert body_ops <= {n.op_type for n in body}, [n.op_type for n in body]
    reference = onnxpress.load(proto)
    for x, c in zip(samples["x"], samples["c"]):
        assert cosine(run(model, x=x, c=c)[0], run(reference, x=x, c=c)[0]) > 0.99, (pipeline, c)


@pytest.mark.parametrize("options", ["smooth=1.5", "outliers=-2"])
def test_dynamic_quant_refuses_meaningless_smoothing_options(options: str) -> None:
    with pytest.raises(onnxpress.OnnxpressError, match="dynamic-quant"):
        onnxpress.optimize(onnxpress.load(_two_consumer_matmuls()), f"dynamic-quant{{{options}}}", verify="off")
