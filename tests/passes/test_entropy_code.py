"""entropy-code and packed models: lossless rANS blobs in onnxpress.DecodeWeights nodes, decoded by
onnxpress.load; a uniform cluster grid whose codes the coder shortens; corrupted blobs refused by name."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.clustering.kmeans import uniform_grid
from onnxpress.kernels.packed import packed_nodes
from onnxpress.tools.cli import main
from onnxpress.tools.testing import embedding_proto

K, N, V = 128, 96, 300


def _model(seed: int = 0, opset: int = 21) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((K, N)).astype(np.float32)
    weight[np.abs(weight) > 3] *= 4  # heavy tails, as trained weights have
    return embedding_proto(weight, rng.standard_normal((V, K)).astype(np.float32), opset)


def _samples(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [{"ids": rng.integers(0, V, (1, 7)).astype(np.int64)} for _ in range(count)]


def _outputs(model) -> list[np.ndarray]:
    session = make_session(model, optimization="all")
    return [session.run(None, s)[0] for s in _samples()]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _packed(tmp_path, spec: str = "cluster{grid=uniform,bits=8,step=0.3}") -> tuple[str, ir.Model, ir.Model]:
    """(packed file, the clustered model, the packed model); the clustered model is also saved as clustered.onnx."""
    clustered, _ = onnxpress.optimize(onnxpress.load(_model()), spec, verify="off")
    clustered_path = str(tmp_path / "clustered.onnx")
    onnxpress.save(clustered, clustered_path, max_ir_version=13)
    packed, report = onnxpress.optimize(onnxpress.load(clustered_path), "entropy-code", verify="end")  # outputs checked equal
    assert report.records[-1].stats["tensors"] == 2
    path = str(tmp_path / "packed.onnx")
    onnxpress.save(packed, path, max_ir_version=13)
    return path, clustered, packed


def test_uniform_grid_keeps_zeros_and_gives_outliers_their_own_levels() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 128)).astype(np.float32)
    w[::4] = 0
    w[1, :5] = [40, -35, 60, 25, -50]  # 0.015 % of the weights  # far outliers (MiniLM's FFN outputs peak at 175x their RMS)
    rms = float(np.sqrt(np.mean(w.astype(np.float64) ** 2)))
    codes, book = uniform_grid(w, 256, step=0.05)
    values = book[0][codes]
    assert (values[::4] == 0).all() and np.all(np.diff(book[0]) >= 0)
    zero = int(np.flatnonzero(book[0] == 0)[0])
    delta = float(book[0, zero + 1] - book[0, zero])
    reach = (zero - int(np.flatnonzero(book[0] >= -delta * (zero + 1))[0])) * delta  # the evenly spaced levels' span
    assert delta >= 0.05 * rms * (1 - 1e-6)  # the asked step, or wider so the levels reach 99.9 % of the weights
    assert (np.abs(w) <= reach + delta / 2).mean() >= 0.999
    bulk = np.abs(w) <= reach
    assert np.abs(values - w)[bulk].max() <= delta / 2 + 1e-5  # the uniform levels keep the bulk's error at delta/2
    far = np.abs(w) > reach + delta / 2
    assert far.sum() == 5
    np.testing.assert_allclose(values[far], w[far])  # fewer far outliers than tail levels: exact
    assert np.unique(codes).size > 40  # a fine grid: many levels in use
    plain, plain_book = uniform_grid(w, 16)  # step 0: the range over 15 evenly spaced levels, no tails
    step = plain_book[0, 8] - plain_book[0, 7]
    assert np.abs(plain_book[0][plain] - w).max() <= step / 2 + 1e-5 and step == pytest.approx(60 / 7, rel=1e-5)


def test_entropy_code_is_lossless_and_load_decodes(tmp_path, kernels_built) -> None:
    path, clustered, packed = _packed(tmp_path)
    assert len(packed_nodes(packed)) == 2
    codes = {name: v.const_value.numpy() for name, v in clustered.graph.initializers.items() if name.endswith("_codes")}
    # the packed file is smaller than the clustered one (rare tail codes), and runs as it is in onnxruntime
    assert os.path.getsize(path) < 0.8 * os.path.getsize(tmp_path / "clustered.onnx")
    raw = onnx.load(path)
    assert any(n.op_type == "DecodeWeights" and n.domain == "onnxpress" for n in raw.graph.node)
    expected = _outputs(clustered)
    for a, b in zip(expected, _outputs(raw), strict=True):
        np.testing.assert_array_equal(a, b)
    loaded = onnxpress.load(path)  # decoded into plain initializers, bit for bit
    assert not packed_nodes(loaded) and "onnxpress" not in loaded.opset_imports
    for name, array in codes.items():
        np.testing.assert_array_equal(loaded.graph.initializers[name].const_value.numpy(), array)
    for a, b in zip(expected, _outputs(loaded), strict=True):
        np.testing.assert_array_equal(a, b)


def test_four_bit_codes_come_back_as_uint4(tmp_path, kernels_built) -> None:
    clustered, _ = onnxpress.optimize(onnxpress.load(_model()), "cluster{grid=uniform,bits=4}", verify="off")
    codes = {n: v.const_value.numpy().astype(np.uint8) for n, v in clustered.graph.initializers.items() if n.endswith("_codes")}
    packed, report = onnxpress.optimize(clustered, "entropy-code{min_saving=0}", verify="end")
    assert report.records[-1].stats["tensors"] == 2
    path = str(tmp_path / "p.onnx")
    onnxpress.save(packed, path, max_ir_version=13)
    loaded = onnxpress.load(path)
    assert len(codes) == 2
    for name, array in codes.items():
        assert loaded.graph.initializers[name].const_value.dtype == ir.DataType.UINT4
        np.testing.assert_array_equal(loaded.graph.initializers[name].const_value.numpy().astype(np.uint8), array)


def test_near_uniform_codes_stay_unpacked(kernels_built) -> None:
    rng = np.random.default_rng(2)
    model = _model()
    model.graph.initializer.append(numpy_helper.from_array(rng.integers(0, 256, (K, N)).astype(np.uint8), "flat"))
    model.graph.node.append(helper.make_node("Cast", ["flat"], ["flat_f"], to=TensorProto.FLOAT))
    model.graph.node.append(helper.make_node("ReduceSum", ["flat_f"], ["total"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, None))
    packed, report = onnxpress.optimize(onnxpress.load(model), "entropy-code", verify="off")
    assert report.records[-1].stats["tensors"] == 0 and report.records[-1].stats["skipped"] == 1
    assert not packed_nodes(packed)


def test_int8_weights_of_qdq_pack_losslessly(kernels_built) -> None:
    model = _model()
    quantized, _ = onnxpress.optimize(onnxpress.load(model), "qdq", samples=_samples(), verify="off")
    expected = _outputs(quantized)
    packed, report = onnxpress.optimize(quantized, "entropy-code{min_saving=0}", verify="off")
    assert report.records[-1].stats["tensors"] >= 1
    for a, b in zip(expected, _outputs(packed), strict=True):
        np.testing.assert_array_equal(a, b)


def _corrupt(path: str, out: str, edit) -> None:
    model = onnx.load(path)
    blob = next(t for t in model.graph.initializer if t.name == "W_codes_opxw")
    data = bytearray(numpy_helper.to_array(blob).tobytes())
    edited = np.frombuffer(bytes(edit(data)), dtype=np.uint8)
    blob.CopyFrom(numpy_helper.from_array(edited, blob.name))
    onnx.save(model, out)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d[:-7], "truncated"),
    (lambda d: d[:100] + bytes([d[100] ^ 0x5A]) + d[101:], "checksum"),
    (lambda d: d[:10], "not an OPXW blob"),
])
def test_corrupted_blob_is_refused_by_name(tmp_path, kernels_built, edit, message) -> None:
    path, _, _ = _packed(tmp_path)
    bad = str(tmp_path / "bad.onnx")
    _corrupt(path, bad, edit)
    with pytest.raises(onnxpress.DataError, match=rf"W_codes.*{message}"):
        onnxpress.load(bad)


def test_code_outside_the_table_is_refused(tmp_path, kernels_built) -> None:
    path, _, _ = _packed(tmp_path)
    model = onnx.load(path)
    table = next(t for t in model.graph.initializer if t.name == "W_codes_opxw_table")
    table.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(table)[:-3], table.name))
    bad = str(tmp_path / "short_table.onnx")
    onnx.save(model, bad)
    with pytest.raises(onnxpress.DataError, match=r"W_codes.*out of codebook"):
        onnxpress.load(bad)


def test_pack_and_unpack_cli_round_trip(tmp_path, kernels_built, capsys) -> None:
    clustered, _ = onnxpress.optimize(onnxpress.load(_model()), "cluster{grid=uniform,bits=8,step=0.3}", verify="off")
    plain = str(tmp_path / "plain.onnx")
    onnxpress.save(clustered, plain, max_ir_version=13)
    packed, unpacked = str(tmp_path / "packed.onnx"), str(tmp_path / "unpacked.onnx")
    assert main(["pack", plain, "-o", packed]) == 0
    assert "2 tensors packed" in capsys.readouterr().out
    assert main(["unpack", packed, "-o", unpacked]) == 0
    assert not any(n.domain == "onnxpress" for n in onnx.load(unpacked).graph.node)
    for a, b in zip(_outputs(onnx.load(packed)), _outputs(onnx.load(unpacked)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert main(["unpack", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_step_search_meets_the_fidelity_target() -> None:
    samples = _samples(16)
    model = _model()
    reference = _outputs(model)
    out, report = onnxpress.optimize(onnxpress.load(model), 'cluster{grid=uniform,bits=8,fidelity="cosine>=0.9995",eval_samples=8}',
                                     samples=samples, verify="off")
    stats = report.records[-1].stats
    assert stats["search_score"] >= 0.9995 and 0 < stats["step"] <= 2
    assert min(_cosine(a, b) for a, b in zip(reference, _outputs(out), strict=True)) >= 0.999
    coarse, report = onnxpress.optimize(onnxpress.load(model), 'cluster{grid=uniform,bits=8,fidelity="cosine>=0.99",eval_samples=8}',
                                        samples=samples, verify="off")
    assert report.records[-1].stats["step"] > stats["step"]  # a looser target buys a coarser grid


def test_bad_options_are_named() -> None:
    with pytest.raises(onnxpress.PassOptionError, match="step"):
        onnxpress.optimize(onnxpress.load(_model()), "cluster{step=0.2}", verify="off")
    with pytest.raises(onnxpress.PassOptionError, match="min_saving"):
        onnxpress.optimize(onnxpress.load(_model()), "entropy-code{min_saving=1.5}", verify="off")
