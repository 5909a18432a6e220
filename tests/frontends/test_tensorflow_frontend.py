"""TensorFlow/Keras frontend: MTCNN's trained RNet and ONet (mtcnn wheel) as Keras objects and SavedModels, on
crops of scikit-learn's photos; .keras/.h5 files (a CNN trained in the test on scikit-learn's digits: no
installable package ships a Keras file, see BENCHMARKS.md); pipelines; bad input."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import onnxpress  # noqa: E402
from onnxpress.backends.ort.runner import make_session, run_session  # noqa: E402
from onnxpress.frontends.base import CHECK_KEY, UntrustedSourceError  # noqa: E402
from onnxpress.irpasses.core.errors import BackendUnavailableError, DataError, InvalidModelError  # noqa: E402
from onnxpress.tools.cli import main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras 3 on numpy 2's __array__(copy=)
Crops = Callable[..., np.ndarray]


def mtcnn_normalize(images: np.ndarray) -> np.ndarray:
    """MTCNN's own input scaling (mtcnn.utils.images.normalize_images)."""
    return ((images - 127.5) / 128).astype(np.float32)


def _run(model: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(run_session(make_session(model), feeds).values())  # type: ignore[arg-type]


def _export(net: object, size: int, folder: Path) -> Path:
    net.export(str(folder), input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="x")], verbose=False)  # type: ignore[attr-defined]
    return folder


@pytest.mark.parametrize("name", ["rnet", "onet"])
def test_mtcnn_keras_object_then_pipelines(name: str, mtcnn_nets: dict, photo_crops: Crops) -> None:
    net, size = mtcnn_nets[name]
    evaluation = mtcnn_normalize(photo_crops(128, size, 1, seed=1))
    calibration = mtcnn_normalize(photo_crops(64, size, 0, seed=2))
    with pytest.raises(DataError, match="subclassed Keras model that declares no inputs"):
        onnxpress.load(net)
    model = onnxpress.load(net, inputs=[f"x:?x{size}x{size}x3:float32"], sample=evaluation)
    check = model.meta[CHECK_KEY]
    assert check.passed and not check.generated and check.samples == 128
    assert all(o.relative <= 1e-4 for o in check.outputs), check.summary()
    props = model.metadata_props
    assert props["onnxpress.source.framework"] == "keras" and props["onnxpress.source.converter"] == "tf2onnx"
    assert "x:?x" in props["onnxpress.source.options"] or "inputs=" in props["onnxpress.source.options"]
    reference = [np.asarray(t) for t in net(evaluation, training=False)]  # type: ignore[operator]
    samples = [{"x": calibration[i : i + 16]} for i in range(0, 64, 16)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized, report = onnxpress.optimize(model, "optimize", samples=samples)
        assert report.checker == "passed"
        quantized, report = onnxpress.optimize(optimized, "int8", samples=samples)
    assert report.checker == "passed"
    assert any(r.modified for r in report.records if r.spec.startswith("qdq"))
    faces = _run(quantized, {"x": evaluation})[-1].argmax(-1)  # last output: face / not face
    assert np.mean(faces == reference[-1].argmax(-1)) >= 0.99


def test_saved_model_from_cli_and_api(mtcnn_nets: dict, photo_crops: Crops, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, size = mtcnn_nets["rnet"]
    folder = _export(net, size, tmp_path / "rnet")
    evaluation = mtcnn_normalize(photo_crops(64, size, 1, seed=3))
    model = onnxpress.load(folder, sample=evaluation)
    check = model.meta[CHECK_KEY]
    assert check.passed and check.reference.startswith("tensorflow") and all(o.relative <= 1e-4 for o in check.outputs)
    assert [v.name for v in model.graph.inputs] == ["x"]
    assert main(["import", str(folder), "-o", str(tmp_path / "rnet.onnx"), "--input", f"x:?x{size}x{size}x3:float32"]) == 0
    out = capsys.readouterr().out
    assert "tensorflow" in out and "tf2onnx" in out and "generated random samples: matches" in out
    got = _run(onnxpress.load(tmp_path / "rnet.onnx"), {"x": evaluation})
    reference = [np.asarray(t) for t in net(evaluation, training=False)]
    assert max(float(np.max(np.abs(g - r))) for g, r in zip(got, reference, strict=True)) <= 1e-4


def test_input_spec_that_does_not_match(mtcnn_nets: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, size = mtcnn_nets["rnet"]
    folder = _export(net, size, tmp_path / "rnet")
    with pytest.raises(DataError, match="sets dimension 1 to 32, .* fixes it at 24"):
        onnxpress.load(folder, inputs="x:?x32x32x3:float32")
    with pytest.raises(DataError, match="names no input .* its inputs: x:\\?x24x24x3:float32"):
        onnxpress.load(folder, inputs="images:?x24x24x3:float32")
    with pytest.raises(DataError, match="gives dtype uint8"):
        onnxpress.load(folder, inputs="x:?x24x24x3:uint8")
    with pytest.raises(DataError, match="rank 3"):
        onnxpress.load(folder, inputs="x:24x24x3:float32")
    out = tmp_path / "out.onnx"
    for spec in ("x:?x32x32x3:float32", "x:1x24:float32:junk", "x24"):
        assert main(["import", str(folder), "-o", str(out), "--input", spec]) == 2
        assert not out.exists()
    assert "fixes it at 24" in capsys.readouterr().err


def test_keras_files_and_lambda_needs_trust(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    keras = tf.keras
    X, y = load_digits(return_X_y=True)
    images = (X / 16).astype(np.float32).reshape(-1, 8, 8, 1)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="digit")
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images, y, epochs=3, verbose=0)
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"digits{suffix}"
        model.save(path)
        lowered = onnxpress.load(path, sample=images[:256])
        assert lowered.meta[CHECK_KEY].passed and lowered.meta[CHECK_KEY].outputs[0].relative <= 1e-4
        labels = _run(lowered, {"digit": images})[0].argmax(1)
        assert np.mean(labels == model.predict(images, verbose=0).argmax(1)) == 1.0
    scaled = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(outputs))
    scaled.save(tmp_path / "lambda.keras")
    with pytest.raises(UntrustedSourceError, match="Lambda"):
        onnxpress.load(tmp_path / "lambda.keras")
    assert main(["import", str(tmp_path / "lambda.keras"), "-o", str(tmp_path / "l.onnx")]) == 2
    assert not (tmp_path / "l.onnx").exists()
    assert onnxpress.load(tmp_path / "lambda.keras", trust_source=True).meta[CHECK_KEY].passed


class _Igamma(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def __call__(self, x: object) -> object:
        return tf.math.igamma(x, x + 1.0) * 2.0


def test_unsupported_op_names_op_node_and_converter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = _Igamma()
    tf.saved_model.save(module, str(tmp_path / "igamma"), signatures=module.__call__.get_concrete_function())
    with pytest.raises(InvalidModelError, match=r"op 'Igamma' \(node '.*Igamma'\) that tf2onnx 1\.\d+\.\d+ cannot convert"):
        onnxpress.load(tmp_path / "igamma")
    assert main(["import", str(tmp_path / "igamma"), "-o", str(tmp_path / "out.onnx")]) == 2
    assert not (tmp_path / "out.onnx").exists()
    assert "Igamma" in capsys.readouterr().err


def test_corrupt_files_and_missing_converter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n junk")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\x08\x01 junk protobuf")
    out = tmp_path / "out.onnx"
    for source in ("bad.keras", "bad.h5", "sm"):
        assert main(["import", str(tmp_path / source), "-o", str(out)]) == 2, source
        assert not out.exists()
    err = capsys.readouterr().err
    assert "could not be loaded by Keras" in err and "could not be read as a SavedModel" in err
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'onnxpress\[tensorflow\]'"):
        onnxpress.load(tmp_path / "sm")
    assert main(["import", str(tmp_path / "bad.keras"), "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("error: ") and "onnxpress[tensorflow]" in lines[0] and not out.exists()
