"""PyTorch frontend: a small CNN trained in the test on scikit-learn's bundled digits (no package ships a small
real PyTorch model here), through onnxpress.load, optimize and int8; .pt2 and TorchScript files; bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
pytest.importorskip("sklearn")

import onnxpress  # noqa: E402
from onnxpress.backends.ort.runner import make_session, run_session  # noqa: E402
from onnxpress.frontends.base import CHECK_KEY, UntrustedSourceError  # noqa: E402
from onnxpress.irpasses.core.errors import DataError  # noqa: E402
from onnxpress.tools.cli import main  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402


@pytest.fixture(scope="module")
def digits_cnn() -> tuple[object, object]:
    X, y = load_digits(return_X_y=True)
    images = torch.tensor(X / 16, dtype=torch.float32).reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(512, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(images), torch.tensor(y)).backward()
        opt.step()
    return net.eval(), images


def test_module_with_dynamic_batch_then_pipelines(digits_cnn: tuple[object, object]) -> None:
    net, images = digits_cnn
    batch = torch.export.Dim("batch")
    model = onnxpress.load(net, example_inputs=(images[:64],), dynamic_shapes=({0: batch},))
    check = model.meta[CHECK_KEY]
    assert check.passed and check.outputs[0].relative <= 1e-4
    assert str(model.graph.inputs[0].shape[0]) == "batch"
    assert model.metadata_props["onnxpress.source.converter"] == "torch.onnx.export (dynamo)"
    name = model.graph.inputs[0].name
    samples = [{name: images[i : i + 32].numpy()} for i in range(0, 128, 32)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized, report = onnxpress.optimize(model, "optimize", samples=samples)
        assert report.checker == "passed"
        quantized, _ = onnxpress.optimize(optimized, "int8", samples=samples)
    with torch.no_grad():
        eager = net(images).argmax(1).numpy()
    got = next(iter(run_session(make_session(quantized), {name: images.numpy()}).values())).argmax(1)
    assert np.mean(got == eager) >= 0.99


def test_pt2_needs_no_trust_and_torchscript_does(digits_cnn: tuple[object, object], tmp_path: Path) -> None:
    net, images = digits_cnn
    torch.export.save(torch.export.export(net, (images[:4],)), str(tmp_path / "m.pt2"))
    assert onnxpress.load(tmp_path / "m.pt2").meta[CHECK_KEY].passed  # the program brings its example inputs
    torch.jit.save(torch.jit.trace(net, images[:4]), str(tmp_path / "m.pt"))
    with pytest.raises(UntrustedSourceError, match="trust_source=True"):
        onnxpress.load(tmp_path / "m.pt", example_inputs=images[:4])
    model = onnxpress.load(tmp_path / "m.pt", example_inputs=images[:4], trust_source=True)
    assert model.metadata_props["onnxpress.source.converter"] == "torch.onnx.export (TorchScript)"
    assert model.meta[CHECK_KEY].passed


def test_bad_input(digits_cnn: tuple[object, object], tmp_path: Path) -> None:
    net, images = digits_cnn
    with pytest.raises(DataError, match="example_inputs= is needed"):
        onnxpress.load(net)
    with pytest.raises(DataError, match="example_inputs do not fit"):
        onnxpress.load(net, example_inputs=torch.zeros(2, 3, 8, 8))
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04 truncated")
    assert main(["import", str(tmp_path / "bad.pt2"), "-o", str(tmp_path / "out.onnx")]) == 2
    assert main(["import", str(tmp_path / "bad.pt2"), "-o", str(tmp_path / "out.onnx")]) == 2
    assert not (tmp_path / "out.onnx").exists()
