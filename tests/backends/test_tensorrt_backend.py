"""TensorRT engines built on this CPU-only machine with TensorRT-RTX (installed by tools/dev), sidecar checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxpress
import pytest
from onnxpress.backends.base import CompileOptions, compile_model, get_backend
from onnxpress.backends.tensorrt import backend as trt_backend
from onnxpress.irpasses.core import BackendUnavailableError
from onnxpress.tools import real_models
from onnxpress.tools.cli import main

DET = Path(main.__code__.co_filename).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


def test_det_engine_and_sidecar_from_the_cli(tmp_path: Path, capsys) -> None:
    engine = tmp_path / "det.engine"
    code = main(["compile", str(DET), "--backend", "tensorrt", "-o", str(engine), "--shapes", "x:1x3x32x32,1x3x736x992,1x3x1024x1024"])
    out = capsys.readouterr().out
    assert code == 0 and engine.stat().st_size > 1_000_000
    sidecar = json.loads((tmp_path / "det.engine.json").read_text())
    assert sidecar["library"] in ("tensorrt", "tensorrt-rtx") and sidecar["library_version"]
    assert sidecar["inputs"] == [{"name": "x", "shape": [-1, 3, -1, -1], "dtype": "FLOAT"}]
    assert sidecar["outputs"][0]["name"] == "sigmoid_0.tmp_0"
    assert sidecar["profiles"]["x"] == {"min": [1, 3, 32, 32], "opt": [1, 3, 736, 992], "max": [1, 3, 1024, 1024]}
    assert sidecar["layer_precisions"] == {"FLOAT": sidecar["layers"]} and sidecar["flags"] == []
    assert sidecar["engine_bytes"] == engine.stat().st_size
    assert "runs here:" in out


def test_engine_availability_is_explained_without_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr(trt_backend, "gpus", list)
    status = trt_backend.TensorRTBackend.availability()
    assert status.can_compile and not status.can_run and "no NVIDIA GPU" in status.reason
    with pytest.raises(BackendUnavailableError, match="cannot run here: .*no NVIDIA GPU"):
        trt_backend.TensorRTBackend().run(trt_backend.Artifact("tensorrt", b""), {})


def test_rtx_engine_on_an_h100_is_refused_in_plain_words(monkeypatch) -> None:
    monkeypatch.setattr(trt_backend, "gpus", lambda: [{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver": "580"}])
    monkeypatch.setattr(trt_backend, "load_tensorrt", lambda prefer=None: (type("M", (), {"__version__": "1.7"}), "tensorrt-rtx"))
    status = trt_backend.TensorRTBackend.availability()
    assert not status.can_run
    assert "TensorRT-RTX engines do not run on NVIDIA H100 80GB HBM3 (compute capability 9.0" in status.reason


def test_missing_tensorrt_names_the_extra(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr(trt_backend, "load_tensorrt", lambda prefer=None: None)
    code = main(["compile", str(DET), "--backend", "tensorrt", "-o", str(tmp_path / "e.engine")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0].startswith("error: backend 'tensorrt' cannot be used here: neither tensorrt nor tensorrt_rtx is installed")
    assert err[1] == "hint: pip install 'onnxpress[tensorrt]'"


def test_two_four_sparse_weights_set_the_sparse_flag() -> None:
    model = onnxpress.load(onnxpress.tools.testing.mlp_proto(hidden=16))
    assert not trt_backend.has_two_four_sparse_weights(model)
    for value in model.graph.initializers.values():
        w = value.const_value.numpy().copy()
        if w.ndim == 2:
            kn = w.T.copy()  # [N, K]
            kn.reshape(-1, 4)[:, :2] = 0  # two zeros in every group of four along K, the reduction axis
            w = np.ascontiguousarray(kn.T)
            value.const_value = onnxpress.irpasses.core.pass_base.ir.tensor(w, name=value.name)
    assert trt_backend.has_two_four_sparse_weights(model)
    artifact = compile_model(model, get_backend("tensorrt"), CompileOptions(shapes={"x": ([1, 8], [1, 8], [4, 8])}))
    assert artifact.metadata["flags"] == ["SPARSE_WEIGHTS"]


def test_paddle_placeholder_dims_do_not_force_height_equal_width() -> None:
    """cls declares x as [-1, 3, '?', '?']; TensorRT would read the shared name as H == W."""
    samples = real_models.text_lines(2, width=192)
    artifact = compile_model(onnxpress.load(real_models.rapidocr_model("cls")), get_backend("tensorrt"), CompileOptions(samples=samples))
    assert artifact.metadata["profiles"]["x"]["opt"] == [1, 3, 48, 192]


@pytest.mark.slow
def test_minilm_engine_with_profiles_from_real_sentences() -> None:
    samples = real_models.minilm_samples(real_models.sentences(6))
    artifact = compile_model(onnxpress.load(real_models.minilm_onnx()), get_backend("tensorrt"), CompileOptions(samples=samples))
    lengths = [s["input_ids"].shape[1] for s in samples]
    assert artifact.metadata["profiles"]["input_ids"] == {"min": [1, min(lengths)], "opt": [1, lengths[0]], "max": [1, max(lengths)]}
    assert artifact.metadata["engine_bytes"] > 10_000_000 and np.isfinite(artifact.metadata["build_seconds"])


@pytest.mark.parametrize(("activations", "precision"), [("int8", "INT8"), ("fp8", "FP8")])
def test_quantized_qdq_model_builds_a_low_precision_engine(tmp_path: Path, activations: str, precision: str) -> None:
    """The qdq pass's TensorRT placement (Q/DQ on Conv inputs) is what TensorRT's explicit quantization takes."""
    from onnxpress.tools.testing import conv_net_proto

    calib = {"x": np.random.default_rng(0).uniform(-1, 1, (4, 1, 3, 16, 16)).astype(np.float32)}
    pipeline = f"convert-opset{{min=19}},qdq{{activations={activations}}}"
    model, _ = onnxpress.optimize(onnxpress.load(conv_net_proto()), pipeline, samples=calib, target="tensorrt", verify="off")
    backend = get_backend("tensorrt")
    artifact = compile_model(model, backend, CompileOptions(), tmp_path / "q.engine")
    sidecar = json.loads((tmp_path / "q.engine.json").read_text())
    assert artifact.path is not None and artifact.path.stat().st_size > 0
    assert precision in sidecar["layer_precisions"], sidecar["layer_precisions"]


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_only_blocked_dequantize_builds_an_engine(tmp_path: Path, bits: int) -> None:
    """weight-only's standard form (int4/int8 DequantizeLinear with block_size, opset 21) is TensorRT's
    weight-only quantization input."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((128, 64)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 128])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])], [w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model, report = onnxpress.optimize(onnxpress.load(proto), f"weight-only{{bits={bits},min_elements=16}}", target="tensorrt", verify="off")
    assert report.records[-1].stats["format"] == "qdq"
    artifact = compile_model(model, get_backend("tensorrt"), CompileOptions(), tmp_path / "w.engine")
    assert artifact.path is not None and artifact.path.stat().st_size > 0


@pytest.mark.parametrize("then", ["", ",convert-opset{min=19},qdq{activations=int8}"])
def test_pruned_and_pruned_int8_models_build_sparse_engines(tmp_path: Path, then: str) -> None:
    """permute-channels + prune 2:4 (sparse-2of4's passes without its fidelity target, which a random MLP
    would not meet), and the same then int8: engines build with SPARSE_WEIGHTS and the sidecar names the
    layers whose weights are 2:4 along their reduction axis (int8 keeps the zeros)."""
    from onnxpress.tools.testing import mlp_proto

    samples = {"x": np.random.default_rng(0).standard_normal((8, 1, 8)).astype(np.float32)}
    pipeline = f"optimize,permute-channels{{pattern=2:4,seconds=0.1}},prune{{pattern=2:4,min_elements=32}}{then}"
    model, _ = onnxpress.optimize(onnxpress.load(mlp_proto(hidden=64)), pipeline, samples=samples, target="tensorrt", verify="off")
    eligible = trt_backend.sparse_eligible_layers(model)
    assert len(eligible) == 2
    compile_model(model, get_backend("tensorrt"), CompileOptions(shapes={"x": ([1, 8], [1, 8], [4, 8])}), tmp_path / "s.engine")
    sidecar = json.loads((tmp_path / "s.engine.json").read_text())
    assert sidecar["flags"] == ["SPARSE_WEIGHTS"] and sidecar["sparse_eligible_layers"] == eligible


def test_default_qdq_for_tensorrt_is_symmetric_int8(tmp_path: Path) -> None:
    """qdq's default activations follow the target: uint8 with zero points for onnxruntime, which TensorRT
    refuses ('Non-zero zero point is not supported'), int8 symmetric under --target tensorrt."""
    from onnxpress.tools.testing import conv_net_proto

    calib = {"x": np.random.default_rng(0).uniform(-1, 1, (4, 1, 3, 16, 16)).astype(np.float32)}
    model, _ = onnxpress.optimize(onnxpress.load(conv_net_proto()), "convert-opset{min=19},qdq", samples=calib, target="tensorrt", verify="off")
    zero_points = [n.inputs[2].const_value.numpy() for n in model.graph if n.op_type == "QuantizeLinear" and len(n.inputs) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    compile_model(model, get_backend("tensorrt"), CompileOptions(), tmp_path / "q.engine")
    assert "INT8" in json.loads((tmp_path / "q.engine.json").read_text())["layer_precisions"]
