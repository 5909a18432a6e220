"""Block-wise weight-only quantization to com.microsoft.MatMulNBits (groundwork for issue 4)."""

from __future__ import annotations

import numpy as np
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.core import PassOptionError
from onnxpress.irpasses.quant.weight_only import quantize_blocks

RNG = np.random.default_rng(0)


def _matmul(w: np.ndarray):
    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


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


def test_needs_an_onnxruntime_target() -> None:
    with pytest.raises(PassOptionError, match="only onnxruntime runs"):
        onnxpress.optimize(_matmul(RNG.standard_normal((64, 64)).astype(np.float32)), "weight-only", verify="off")


@pytest.mark.slow
def test_minilm_4bit_keeps_embeddings_close() -> None:
    from onnxpress.tools import real_models

    samples = real_models.minilm_samples(real_models.sentences(8))
    out, report = onnxpress.optimize(onnxpress.load(real_models.minilm_onnx()), "w4", samples=samples, target="ort", min_cosine=0.93)
    assert [n.op_type for n in out.graph].count("MatMulNBits") == 36
    assert report.numerics is not None and min(e.cosine for e in report.numerics) > 0.93
