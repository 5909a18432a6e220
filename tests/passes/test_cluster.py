"""cluster: 1-D k-means codebooks per column / row / tensor, in standard ONNX (folded by onnxruntime at load)
or as LutMatMul; exact zeros kept; an already few-valued weight reproduced exactly."""

from __future__ import annotations

import numpy as np
import onnx
import onnxpress
import pytest
from onnxpress.backends.ort.runner import make_session
from onnxpress.irpasses.clustering.kmeans import kmeans_columns, kmeans_tensor
from onnxpress.kernels import formats
from onnxpress.tools.testing import embedding_proto

K, N, V = 128, 96, 300


def _model(weight: np.ndarray, table: np.ndarray) -> onnx.ModelProto:
    return embedding_proto(weight, table)


def _arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((K, N)).astype(np.float32), rng.standard_normal((V, K)).astype(np.float32)


def _samples(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [{"ids": rng.integers(0, V, (1, 7)).astype(np.int64)} for _ in range(count)]


def _run(model, sample) -> np.ndarray:
    return make_session(model, optimization="all").run(None, sample)[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_kmeans_beats_uniform_and_keeps_zeros() -> None:
    weight, _ = _arrays()
    codes, book = kmeans_columns(weight, 16)
    clustered = book[np.arange(N), codes]
    scale = np.abs(weight).max(axis=0) / 7
    uniform = np.clip(np.rint(weight / scale), -8, 7) * scale
    assert ((clustered - weight) ** 2).mean() < 0.85 * ((uniform - weight) ** 2).mean()  # 0.78 measured
    pruned = formats.magnitude_nm(weight)
    for codes, book in (kmeans_columns(pruned, 16), kmeans_tensor(pruned, 16)):
        values = book[np.arange(N), codes] if book.shape[0] > 1 else book[0][codes]
        np.testing.assert_array_equal(values == 0, pruned == 0)


def test_portable_form_is_smaller_standard_onnx_and_close() -> None:
    weight, table = _arrays()
    proto = _model(weight, table)
    model, report = onnxpress.optimize(onnxpress.load(proto), "cluster{bits=4}", samples=_samples(), verify="end")
    stats = report.records[-1].stats
    assert stats["layers"] == 1 and stats["tables"] == 1 and stats["bytes_after"] < stats["bytes_before"] / 5
    assert {n.domain for n in model.graph} <= {"", "ai.onnx"}
    assert "W" not in model.graph.initializers and "table" not in model.graph.initializers
    for sample in _samples(3):
        assert _cosine(_run(model, sample), _run(proto, sample)) > 0.98


def test_a_weight_with_few_values_is_reproduced_exactly() -> None:
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((N, 16)).astype(np.float32)[np.arange(N), rng.integers(0, 16, (K, N))]
    table = np.repeat(rng.standard_normal((1, 16)).astype(np.float32), V * K // 16, axis=0).reshape(V, K)
    proto = _model(weight, table)
    model, _ = onnxpress.optimize(onnxpress.load(proto), "cluster{bits=4,method=kmeans,book_dtype=float32}", verify="off")
    for sample in _samples(2):
        np.testing.assert_allclose(_run(model, sample), _run(proto, sample), rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("kernels_built")
def test_target_ort_runs_lut_matmul_with_the_portable_values() -> None:
    weight, table = _arrays(1)
    proto = _model(weight, table)
    portable, _ = onnxpress.optimize(onnxpress.load(proto), "cluster{bits=4,method=kmeans}", verify="off")
    lut, report = onnxpress.optimize(onnxpress.load(proto), "cluster{bits=4,method=kmeans,form=lut}", target="ort", verify="off")
    assert report.records[-1].stats["lut_matmuls"] == 1 and any(n.op_type == "LutMatMul" for n in lut.graph)
    for sample in _samples(2):
        np.testing.assert_allclose(_run(lut, sample), _run(portable, sample), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("spec", "message"), [
    ("cluster{bits=9}", "bits=9 must be in 2..8"),
    ("cluster{bits=8,form=lut}", "form=lut needs bits <= 4"),
    ("cluster{iterations=0}", "iterations=0 must be at least 1"),
])
def test_bad_options_are_clear_errors(spec: str, message: str) -> None:
    weight, table = _arrays()
    with pytest.raises(onnxpress.OnnxpressError, match=message):
        onnxpress.optimize(onnxpress.load(_model(weight, table)), spec, verify="off")


def test_grouped_books_share_one_book_per_group_of_columns() -> None:
    weight, table = _arrays()
    model = onnxpress.load(_model(weight, table))
    grouped, report = onnxpress.optimize(model, "cluster{bits=4,scope=group:8}", verify="off")
    per_column, report_columns = onnxpress.optimize(model, "cluster{bits=4}", verify="off")
    books = grouped.graph.initializers["W_codebook"].const_value.numpy()
    assert books.size == -(-N // 8) * 16  # one 16-entry book per 8 columns
    assert report.records[-1].stats["bytes_after"] < report_columns.records[-1].stats["bytes_after"]
    sample = _samples(1)[0]
    reference = _run(model, sample)
    # i.i.d. columns: 16 levels fitted to 8 columns at once serve them as well as one book each (0.987 vs 0.986)
    assert _cosine(reference, _run(grouped, sample)) > _cosine(reference, _run(per_column, sample)) - 0.005 > 0.975
    with pytest.raises(onnxpress.PassOptionError, match="scope"):
        onnxpress.optimize(model, "cluster{scope=group:1}", verify="off")
