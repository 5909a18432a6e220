from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxpress
import pytest
from onnx import TensorProto, helper
from onnxpress.irpasses.core import (
    ExternalDataError,
    InvalidModelError,
    UnsafeOutputError,
)
from onnxpress.tools.testing import assert_same_outputs, digest

X = {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}


def test_load_from_path_bytes_and_proto_agree(mlp_file: Path, mlp_proto: onnx.ModelProto) -> None:
    from_path = onnxpress.load(mlp_file)
    from_bytes = onnxpress.load(mlp_proto.SerializeToString())
    from_proto = onnxpress.load(mlp_proto)
    assert [n.op_type for n in from_path.graph] == [n.op_type for n in from_bytes.graph] == [n.op_type for n in from_proto.graph]


def test_external_weights_stay_on_disk_and_round_trip(mlp_external: Path, tmp_path: Path) -> None:
    before = digest(mlp_external.parent)
    model = onnxpress.load(mlp_external)
    assert all(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())
    out = tmp_path / "out" / "opt.onnx"
    optimized, _ = onnxpress.optimize(model, "cleanup", samples=[X])
    onnxpress.save(optimized, out)
    assert (tmp_path / "out" / "opt.onnx.data").is_file()  # external in, external out
    assert digest(mlp_external.parent) == before  # the input is never modified
    assert_same_outputs(onnx.load(mlp_external), onnxpress.load(out), X)


def test_save_refuses_to_overwrite_the_input_or_its_data(mlp_external: Path) -> None:
    model = onnxpress.load(mlp_external)
    before = digest(mlp_external.parent)
    with pytest.raises(UnsafeOutputError, match="refusing to write"):
        onnxpress.save(model, mlp_external)
    with pytest.raises(UnsafeOutputError, match="mlp.onnx.data"):
        onnxpress.save(model, mlp_external.parent / "mlp.onnx.data")
    with pytest.raises(UnsafeOutputError, match="refusing to write"):
        onnxpress.save(model, mlp_external.parent / "other" / ".." / "mlp.onnx")
    assert digest(mlp_external.parent) == before


def test_save_is_atomic_on_failure(mlp_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous")
    model = onnxpress.load(mlp_file)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ir, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        onnxpress.save(model, out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.onnx")] == []


def test_ir_version_is_capped_for_the_runtime(mlp_file: Path, tmp_path: Path) -> None:
    model = onnxpress.load(mlp_file)
    model.ir_version = 14
    onnxpress.save(model, tmp_path / "a.onnx", max_ir_version=13)
    assert onnx.load(tmp_path / "a.onnx").ir_version == 13
    assert model.ir_version == 14  # the in-memory model keeps its own stamp


def test_opset_conversion(mlp_proto: onnx.ModelProto) -> None:
    mlp_proto.opset_import[0].version = 13
    model = onnxpress.load(mlp_proto, target_opset=17)
    assert model.opset_imports[""] == 17
    assert_same_outputs(mlp_proto, model, X)
    with pytest.raises(InvalidModelError, match="cannot convert the given model from opset 13 to 9"):
        onnxpress.load(mlp_proto, target_opset=9)


# ----- bad input: one clear error, input untouched ---------------------------------------------------
def test_truncated_file(mlp_file: Path) -> None:
    data = mlp_file.read_bytes()
    mlp_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match="is not a readable ONNX model") as info:
        onnxpress.load(mlp_file)
    assert "truncated" in (info.value.hint or "")


@pytest.mark.parametrize("content", [b"hello, not a model", b"\x89PNG\r\n\x1a\n" + bytes(64), b""])
def test_not_onnx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(InvalidModelError, match="x.onnx' is not"):
        onnxpress.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="does not exist"):
        onnxpress.load(tmp_path / "nope.onnx")


def test_cycle_names_the_nodes() -> None:
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
        helper.make_node("Identity", ["a"], ["y"], name="out"),
    ]
    graph = helper.make_graph(nodes, "cyc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidModelError, match="has a cycle: Add node 'first' -> Relu node 'second'|has a cycle: Relu node 'second' -> Add node 'first'"):
        onnxpress.load(model)


def test_unsorted_file_is_sorted_on_load(mlp_proto: onnx.ModelProto) -> None:
    nodes = list(mlp_proto.graph.node)
    del mlp_proto.graph.node[:]
    mlp_proto.graph.node.extend(reversed(nodes))
    model = onnxpress.load(mlp_proto)
    assert [n.name for n in model.graph][0] == "mm1"


def test_undefined_input_is_named(mlp_proto: onnx.ModelProto) -> None:
    mlp_proto.graph.node[1].input[1] = "nowhere"
    with pytest.raises(InvalidModelError, match="input 1 \\('nowhere'\\) of Add node 'add1'"):
        onnxpress.load(mlp_proto)


def test_missing_external_data(mlp_external: Path) -> None:
    (mlp_external.parent / "mlp.onnx.data").unlink()
    with pytest.raises(ExternalDataError, match="external-data file 'mlp.onnx.data' is missing"):
        onnxpress.load(mlp_external)


def test_truncated_external_data(mlp_external: Path) -> None:
    data = mlp_external.parent / "mlp.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ExternalDataError, match="runs past the end of 'mlp.onnx.data'"):
        onnxpress.load(mlp_external)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_escaping_the_folder(mlp_external: Path, location: str) -> None:
    proto = onnx.load(mlp_external, load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save_model(proto, mlp_external)
    before = digest(mlp_external.parent)
    with pytest.raises(ExternalDataError, match="tensor 'w1'.*(escapes the model's folder|must be a relative path)"):
        onnxpress.load(mlp_external)
    assert digest(mlp_external.parent) == before


def test_outputs_get_normal_permissions(mlp_file: Path, tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        out = onnxpress.save(onnxpress.load(mlp_file), tmp_path / "o.onnx")
        assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    finally:
        os.umask(mask)


def test_inline_save_streams_large_weights_and_reads_back_exactly(tmp_path) -> None:
    """Large weights go out one at a time as graph fragments after the rest of the model (protobuf merges
    them on parse); int4 weights (packed by onnx-ir's serializer) and small ones round-trip too."""
    import ml_dtypes
    import numpy as np
    import onnx
    import onnx_ir as ir
    import onnxpress

    rng = np.random.default_rng(0)
    big = rng.standard_normal((256, 128)).astype(np.float32)  # 128 KiB
    codes = rng.integers(-8, 8, size=(256, 512)).astype(ml_dtypes.int4)  # 64 KiB packed, not raw-writable
    graph = ir.Graph(
        [x := ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2, 256]))], [], nodes=[],
        initializers=[ir.Value(name=n, const_value=ir.tensor(a, name=n)) for n, a in (("big", big), ("codes", codes), ("small", np.arange(4, dtype=np.int64)))],
        opset_imports={"": 21}, name="g",
    )
    mm = ir.node("MatMul", [x, graph.initializers["big"]])
    mm.outputs[0].name, mm.outputs[0].type, mm.outputs[0].shape = "y", ir.TensorType(ir.DataType.FLOAT), ir.Shape([2, 128])
    graph.append(mm)
    graph.outputs.append(mm.outputs[0])
    path = onnxpress.save(ir.Model(graph, ir_version=10), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx.data").exists()
    onnx.checker.check_model(str(path))
    loaded = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    np.testing.assert_array_equal(loaded["big"], big)
    np.testing.assert_array_equal(loaded["codes"].astype(np.int8), codes.astype(np.int8))
    np.testing.assert_array_equal(loaded["small"], np.arange(4))
    back = onnxpress.load(str(path))
    np.testing.assert_array_equal(back.graph.initializers["big"].const_value.numpy(), big)
