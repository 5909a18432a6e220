"""Block-wise weight-only quantization: MatMulNBits/GatherBlockQuantized or blocked DequantizeLinear, RTN or GPTQ."""

from __future__ import annotations

import numpy as np
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.core import PassOptionError
from onnxpress.irpasses.quant.weight_only import quantize_blocks

RNG = np.random.default_rng(0)


def _matmul(w: np.ndarray, opset: int = 17):
    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _embedding(table: np.ndarray, opset: int = 17):
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], name="embed")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, table.shape[1]])],
        [numpy_helper.from_array(table, "table")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_onnxruntime_computes_exactly_our_dequantized_weight(bits: int, symmetric: bool) -> None:
    w = RNG.standard_normal((80, 40)).astype(np.float32)  # K not a multiple of the block: padded
    x = RNG.standard_normal((3, 80)).astype(np.float32)
    out, report = onnxpress.optimize(_matmul(w), f"weight-only{{bits={bits},block=32,symmetric={str(symmetric).lower()},min_elements=16}}", target="ort", verify="off")
    assert [n.op_type for n in out.graph.node] == ["MatMulNBits"] and report.records[-1].stats["matmuls_quantized"] == 1
    dequantized = quantize_blocks(w, bits, 32, symmetric).dequantize(80, bits, 32)
    y = make_session(out).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ dequantized, rtol=1e-5, atol=1e-5)
    limit = {4: 0.2, 8: 0.012}[bits]  # half a quantization step of a unit normal block, roughly
    assert np.abs(dequantized - w).max() < 2 * limit * np.abs(w).max() / 2


def test_scale_search_never_increases_block_error() -> None:
    w = RNG.standard_t(3, size=(256, 64)).astype(np.float32)  # heavy tails: clipping helps
    plain = quantize_blocks(w, 4, 32, True, search=False).dequantize(256, 4, 32)
    searched = quantize_blocks(w, 4, 32, True, search=True).dequantize(256, 4, 32)
    assert np.sum((searched - w) ** 2) < np.sum((plain - w) ** 2)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_standard_blocked_dequantize_form_computes_our_weight(bits: int, symmetric: bool) -> None:
    w = RNG.standard_normal((80, 40)).astype(np.float32)
    x = RNG.standard_normal((3, 80)).astype(np.float32)
    options = f"bits={bits},block=32,symmetric={str(symmetric).lower()},min_elements=16"
    out, report = onnxpress.optimize(_matmul(w, opset=21), f"weight-only{{{options}}}", verify="off")
    assert [n.op_type for n in out.graph.node] == ["DequantizeLinear", "MatMul"] and report.records[-1].stats["format"] == "qdq"
    assert {d.domain for d in out.opset_import} == {""}  # nothing but standard ONNX
    dq = out.graph.node[0]
    assert {a.name: helper.get_attribute_value(a) for a in dq.attribute} == {"axis": 0, "block_size": 32}
    dequantized = quantize_blocks(w, bits, 32, symmetric).dequantize(80, bits, 32)
    np.testing.assert_allclose(make_session(out).run(None, {"x": x})[0], x @ dequantized, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["nbits", "qdq"])
def test_embedding_rows_come_back_from_the_quantized_table(form: str) -> None:
    table = RNG.standard_normal((300, 64)).astype(np.float32)
    ids = np.array([[0, 7, 299, 7, 150]], dtype=np.int64)
    out, report = onnxpress.optimize(_embedding(table, opset=21), f"weight-only{{bits=4,format={form}}}", target="ort" if form == "nbits" else None, verify="off")
    assert report.records[-1].stats["tables_quantized"] == 1
    ops = [n.op_type for n in out.graph.node]
    # nbits: one contrib op; qdq: rows (and their scales) gathered first, then only they are dequantized
    assert ops == (["GatherBlockQuantized"] if form == "nbits" else ["Gather", "Gather", "DequantizeLinear"])
    expected = quantize_blocks(table.T, 4, 32, True).dequantize(64, 4, 32).T[ids]  # rows quantized in blocks of 32
    np.testing.assert_allclose(make_session(out).run(None, {"ids": ids})[0], expected, rtol=1e-6, atol=1e-6)
    assert np.abs(expected - table[ids]).max() < 0.25 * np.abs(table).max()


def test_standard_form_needs_opset_21_and_contrib_ops_need_onnxruntime() -> None:
    w = RNG.standard_normal((64, 64)).astype(np.float32)
    with pytest.raises(PassOptionError, match="needs opset 21"):
        onnxpress.optimize(_matmul(w), "weight-only", verify="off")
    with pytest.raises(PassOptionError, match="only onnxruntime runs"):
        onnxpress.optimize(_matmul(w, opset=21), "weight-only{format=nbits}", target="tensorrt", verify="off")


def test_gptq_uses_calibration_data_to_cut_output_error() -> None:
    """Correlated inputs (as real activations are): GPTQ's layer-output error on held-out inputs is well under
    round-to-nearest's, at the same bits, blocks and scales search."""
    k, n = 128, 64
    mixing = RNG.standard_normal((16, k)).astype(np.float32)
    def inputs(count: int) -> np.ndarray:
        return (RNG.standard_normal((count, 16)) @ mixing + 0.1 * RNG.standard_normal((count, k))).astype(np.float32)
    w = RNG.standard_normal((k, n)).astype(np.float32)
    calibration = [{"x": inputs(3)} for _ in range(40)]
    held_out = inputs(3)
    errors = {}
    for method in ("rtn", "gptq"):
        out, report = onnxpress.optimize(_matmul(w), f"weight-only{{bits=4,method={method},min_elements=16}}", samples=calibration, target="ort", verify="off")
        assert report.records[-1].stats["method"] == method
        errors[method] = np.linalg.norm(make_session(out).run(None, {"x": held_out})[0] - held_out @ w)
    assert errors["gptq"] < 0.6 * errors["rtn"], errors
    out, report = onnxpress.optimize(_matmul(w), "weight-only{bits=4,min_elements=16}", samples=calibration, target="ort", verify="off")
    assert report.records[-1].stats["method"] == "gptq"  # auto: data given, so GPTQ


@pytest.mark.slow
def test_minilm_4bit_keeps_embeddings_close() -> None:
    from onnxpress.tools import real_models

    samples = real_models.minilm_samples(real_models.sentences(8))
    out, report = onnxpress.optimize(onnxpress.load(real_models.minilm_onnx()), "w4", samples=samples, target="ort", min_cosine=0.93)
    ops = [n.op_type for n in out.graph]
    assert ops.count("MatMulNBits") == 36 and ops.count("GatherBlockQuantized") == 2  # word and position tables
    assert report.numerics is not None and min(e.cosine for e in report.numerics) > 0.93


def test_fidelity_search_keeps_the_sensitive_layer_at_8_bits() -> None:
    """Mixed precision: of two MatMuls, the one whose 4-bit blocks are wasted on outlier rows gets 8 bits, the
    other stays at 4 (judged on calibration samples held out from GPTQ)."""
    from onnxpress.irpasses.core import PassContext, PassManager, build_passes

    rng = np.random.default_rng(7)
    smooth = (0.1 * rng.standard_normal((64, 64))).astype(np.float32)
    spiky = (0.1 * rng.standard_normal((64, 64))).astype(np.float32)
    spiky[::32] *= 40.0  # one outlier row per block of 32: at 4 bits the rest of each block rounds to zero ...
    smooth[:, ::32] *= 0.01  # ... while the inputs it multiplies are nearly silent, so the output feels it
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="smooth"), helper.make_node("MatMul", ["h", "w1"], ["y"], name="spiky")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])],
                              [numpy_helper.from_array(smooth, "w0"), numpy_helper.from_array(spiky, "w1")])
    model = onnxpress.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    samples = {"x": rng.standard_normal((16, 4, 64)).astype(np.float32)}
    plain = onnxpress.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    PassManager(build_passes("weight-only{min_elements=1024}"), ctx=PassContext(samples=samples, target="ort")).run(plain)
    ctx = PassContext(samples=samples, target="ort")
    PassManager(build_passes('weight-only{min_elements=1024,fidelity="cosine>=0.975",eval_samples=4}'), ctx=ctx).run(model)
    info = ctx.extra["quantization"]
    levels = {r["node"]: r["level"] for r in info["sensitivity"]}
    assert info["fidelity"]["met"] and levels["spiky"] != "full" and levels["smooth"] == "full", info["sensitivity"]
    bits = {n.name: n.attributes.get_int("bits") for n in model.graph if n.op_type == "MatMulNBits"}
    assert bits.get("smooth_nbits") == 4 and bits.get("spiky_nbits", 8) == 8
    assert sum(v.const_value.nbytes for v in model.graph.initializers.values()) > sum(v.const_value.nbytes for v in plain.graph.initializers.values())
