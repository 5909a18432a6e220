"""SparseMatMul against numpy on shapes the self-test does not cover, and its refusals of bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from onnxpress.kernels import formats, graphs, reference


def _weight(K: int, N: int, m: int = 4, n: int = 2, seed: int = 0) -> np.ndarray:
    return formats.magnitude_nm(np.random.default_rng(seed).standard_normal((K, N)).astype(np.float32), m, n)


def test_packing_round_trips_and_keeps_every_non_zero() -> None:
    weight = _weight(48, 37)
    for dtype in ("float32", "float16"):
        packed = formats.pack_sparse(weight, value_dtype=dtype)
        assert packed.values.shape == (3, 12, 2, 16) and packed.indices.shape == (3, 12, 2, 4)
        np.testing.assert_allclose(formats.unpack_sparse(packed), weight, rtol=1e-3 if dtype == "float16" else 0)
    int8 = formats.pack_sparse(weight, value_dtype="int8")
    np.testing.assert_allclose(formats.unpack_sparse(int8), weight, atol=np.abs(weight).max() / 127)


def test_pack_refuses_a_weight_that_is_not_n_of_m() -> None:
    weight = np.ones((8, 3), np.float32)
    with pytest.raises(Exception, match="column 0, rows 0..3 hold 4 non-zeros, more than 2 of 4"):
        formats.pack_sparse(weight)
    with pytest.raises(Exception, match="K=6 is not a multiple of m=4"):
        formats.pack_sparse(np.zeros((6, 3), np.float32))


@pytest.mark.parametrize("rows", [0, 1, 5, 64])
def test_matches_numpy_with_bias_and_no_rows(rows: int) -> None:
    weight = _weight(384, 96, seed=rows)
    packed = formats.pack_sparse(weight)
    bias = np.linspace(-1, 1, 96).astype(np.float32)
    a = np.random.default_rng(1).standard_normal((rows, 384)).astype(np.float32)
    y = graphs.session(graphs.sparse_matmul(packed, bias), threads=2).run(None, {"A": a})[0]
    assert y.shape == (rows, 96)
    np.testing.assert_allclose(y, reference.sparse_matmul(a, packed, bias), rtol=1e-5, atol=1e-4)


def test_weights_fed_at_run_time_give_the_same_answer() -> None:
    """Not a constant: validated and used per call instead of once at load."""
    import onnx

    packed = formats.pack_sparse(_weight(64, 20))
    model = graphs.sparse_matmul(packed)
    values = model.graph.initializer[0]
    model.graph.input.append(onnx.helper.make_tensor_value_info("values", onnx.TensorProto.FLOAT, list(packed.values.shape)))
    model.graph.initializer.remove(values)
    a = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
    y = graphs.session(model).run(None, {"A": a, "values": packed.values})[0]
    np.testing.assert_allclose(y, reference.sparse_matmul(a, packed), rtol=1e-5, atol=1e-5)


def _broken(kind: str) -> formats.SparseWeights:
    packed = formats.pack_sparse(_weight(32, 16, m=8, n=4), 8, 4) if kind == "position" else formats.pack_sparse(_weight(32, 16))
    if kind == "metadata length":
        packed.indices = packed.indices[:, :-1]
    elif kind == "position":  # m = 8: one byte per position; 9 is past the group
        packed.indices = packed.indices.copy()
        packed.indices[0, 0, 1, 3] = 9
    elif kind == "order":  # the same position twice
        packed.indices = packed.indices.copy()
        packed.indices[0, 0, 1] = packed.indices[0, 0, 0]
    elif kind == "int8 without scales":
        packed = formats.pack_sparse(_weight(32, 16), value_dtype="int8")
        packed.scales = None
    return packed


@pytest.mark.parametrize(("kind", "message"), [
    ("metadata length", "indices must be uint8 of shape"),
    ("position", "not strictly increasing positions below m=8"),
    ("order", "not strictly increasing positions below m=4"),
    ("int8 without scales", "int8 values need scales"),
])
def test_bad_packed_inputs_are_refused_at_load_naming_the_node(kind: str, message: str) -> None:
    with pytest.raises(Exception, match=message) as caught:
        graphs.session(graphs.sparse_matmul(_broken(kind), name="ffn.0"))
    assert "onnxpress.SparseMatMul node 'ffn.0'" in str(caught.value)


def test_an_input_of_the_wrong_width_is_an_error_at_run_time() -> None:
    session = graphs.session(graphs.sparse_matmul(formats.pack_sparse(_weight(32, 16)), name="layer"))
    with pytest.raises(Exception, match=r"input A must be float32 \[..., 32\], got \[2, 31\]"):
        session.run(None, {"A": np.zeros((2, 31), np.float32)})
