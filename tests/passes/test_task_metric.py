"""Fidelity targets on a task metric the user names as 'package.module:function>=X': the searches of every
lossy pass take it in place of the built-in cosine, and a bad name is a one-line error naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.quant.sensitivity import parse_fidelity

METRIC_MODULE = '''
import numpy as np
calls = []

def sign_agreement(reference, candidate):
    """Share of output elements whose sign matches float's (a stand-in task metric)."""
    calls.append(len(reference))
    same = [np.mean(np.sign(r[name]) == np.sign(c[name])) for r, c in zip(reference, candidate) for name in r]
    return float(np.mean(same))

def never(reference, candidate):
    return 0.0
'''


@pytest.fixture
def user_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "user_task_metrics.py").write_text(METRIC_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import user_task_metrics

    return importlib.reload(user_task_metrics)


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((96, 8)) @ rng.standard_normal((8, 80)) + 0.05 * rng.standard_normal((96, 80))).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="proj")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 96])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 80])], [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _samples(count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 32, 96)).astype(np.float32)} for _ in range(count)]


def test_the_named_metric_drives_the_search(user_metrics) -> None:
    spec = 'lowrank{fidelity="user_task_metrics:sign_agreement>=0.9",eval_samples=4,multiple=8,cost_model=none,probe=false}'
    model, report = onnxpress.optimize(_model(), spec, samples=_samples(12), verify="off")
    assert user_metrics.calls and set(user_metrics.calls) == {4}  # called on the 4 held-back samples
    assert report.records[-1].stats["factorized"] == 1
    assert report.details["lowrank"]["fidelity"] >= 0.9
    spec = 'lowrank{fidelity="user_task_metrics:never>=0.5",eval_samples=4,multiple=8,cost_model=none,probe=false}'
    _, report = onnxpress.optimize(_model(), spec, samples=_samples(12), verify="off")
    assert report.records[-1].stats["factorized"] == 0  # a target no trial meets leaves the model whole


@pytest.mark.parametrize(("text", "message"), [
    ("no_such_module_xyz:f>=0.9", "module 'no_such_module_xyz' cannot be imported"),
    ("onnxpress.irpasses.quant.sensitivity:no_such_function>=0.9", "has no function 'no_such_function'"),
    ("onnxpress.irpasses.quant.sensitivity:top1<=0.9", "higher is better"),
])
def test_bad_metric_names_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(PassOptionError, match=message):
        parse_fidelity(text)


def test_the_cli_takes_a_named_metric(user_metrics, tmp_path: Path) -> None:
    from onnxpress.tools.cli import main

    src, out, data = tmp_path / "m.onnx", tmp_path / "out.onnx", tmp_path / "calib.npz"
    onnx.save(_model(), src)
    np.savez(data, x=np.stack([s["x"] for s in _samples(12)]))  # one sample per leading index
    pipeline = 'prune{pattern=2:4,fidelity="user_task_metrics:sign_agreement>=0.8",eval_samples=4}'
    assert main(["opt", str(src), "-o", str(out), "-p", pipeline, "--calib", str(data), "--no-verify", "-q"]) == 0
    assert out.exists() and user_metrics.calls


def test_cosine_warns_once_when_an_output_mixes_scales(caplog: pytest.LogCaptureFixture) -> None:
    """Rows like YOLO's: 4 box rows in pixels, 6 score rows in [0, 1]: the cosine says the boxes' fidelity."""
    import logging

    from onnxpress.irpasses.quant import sensitivity

    rng = np.random.default_rng(0)
    mixed = np.concatenate([rng.uniform(0, 320, (1, 4, 50)), rng.uniform(0, 1e-2, (1, 6, 50))], axis=1)
    even = rng.standard_normal((1, 10, 50))
    with caplog.at_level(logging.WARNING, logger="onnxpress"):
        sensitivity.cosine([{"even": even}], [{"even": even}])
        assert "differ in scale" not in caplog.text
        for _ in range(3):
            sensitivity.cosine([{"boxes_and_scores": mixed}], [{"boxes_and_scores": mixed * 1.01}])
    assert caplog.text.count("'boxes_and_scores'") == 1 and "package.module:function" in caplog.text
