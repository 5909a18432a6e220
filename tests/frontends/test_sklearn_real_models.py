"""scikit-learn and XGBoost models trained in the test on data scikit-learn ships (no installable package ships
a fitted estimator; see BENCHMARKS.md): a tree ensemble and a preprocessing Pipeline, each from the CLI (.skops,
--input) and the API, then optimize and int8 with their fidelity."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
skops_io = pytest.importorskip("skops.io")

import onnxpress  # noqa: E402
from onnxpress.backends.ort.runner import make_session, run_session  # noqa: E402
from onnxpress.frontends.base import CHECK_KEY  # noqa: E402
from onnxpress.irpasses.core.errors import DataError  # noqa: E402
from onnxpress.tools.cli import main  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402


def _labels(model: object, X: np.ndarray) -> np.ndarray:
    return run_session(make_session(model), {"X": X.astype(np.float32)})["label"]  # type: ignore[arg-type]


def _pipelines(model: object, X: np.ndarray) -> tuple[object, object]:
    samples = [{"X": X[i : i + 64].astype(np.float32)} for i in range(0, 256, 64)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized, report = onnxpress.optimize(model, "optimize", samples=samples)
        assert report.checker == "passed"
        return onnxpress.optimize(optimized, "int8", samples=samples)


def test_tree_ensemble_from_cli_and_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.ensemble import ExtraTreesClassifier

    X, y = load_breast_cancer(return_X_y=True)
    forest = ExtraTreesClassifier(n_estimators=100, max_depth=8, random_state=0).fit(X[::2], y[::2])
    skops_io.dump(forest, tmp_path / "forest.skops")
    assert skops_io.get_untrusted_types(file=tmp_path / "forest.skops") == ["sklearn.tree._tree.Tree"]  # skops 0.16 asks for trust
    source = [str(tmp_path / "forest.skops"), "--trust-source"]
    assert main(["import", *source, "-o", str(tmp_path / "forest.onnx"), "--input", "X:?x30:float32"]) == 0
    assert "generated random samples: matches" in capsys.readouterr().out
    np.savez(tmp_path / "rows.npz", X=X[1::2, None])  # DATA: axis 0 samples, each a batch of one row
    assert main(["import", *source, "-o", str(tmp_path / "forest.onnx"), "--inputs", str(tmp_path / "rows.npz")]) == 0
    assert "on 284 given samples: matches" in capsys.readouterr().out
    assert main(["import", *source, "-o", str(tmp_path / "bad.onnx"), "--input", "X:?x31:float32"]) == 2
    assert "31 features" in capsys.readouterr().err and not (tmp_path / "bad.onnx").exists()
    model = onnxpress.load(forest, sample=X[1::2])
    assert model.meta[CHECK_KEY].passed and model.meta[CHECK_KEY].outputs[0].agreement == 1.0
    assert np.array_equal(_labels(onnxpress.load(tmp_path / "forest.onnx"), X), forest.predict(X.astype(np.float32)))
    out, report = _pipelines(model, X)
    assert not any(r.modified for r in report.records) and "changed nothing" in report.table(compact=True)


def test_preprocessing_pipeline_from_cli_and_api(tmp_path: Path) -> None:
    from sklearn.decomposition import PCA
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = make_pipeline(StandardScaler(), PCA(32, random_state=0), MLPClassifier((64,), max_iter=200, random_state=0))
        pipeline.fit(X[::2], y[::2])
    skops_io.dump(pipeline, tmp_path / "pipe.skops")
    trusted = skops_io.get_untrusted_types(file=tmp_path / "pipe.skops")
    assert main(["import", str(tmp_path / "pipe.skops"), "-o", str(tmp_path / "pipe.onnx")] + (["--trust-source"] if trusted else [])) == 0
    model = onnxpress.load(pipeline, sample=X[1::2])
    check = model.meta[CHECK_KEY]
    assert check.passed and check.outputs[0].agreement == 1.0 and check.outputs[1].relative <= 1e-4
    expected = pipeline.predict(X)
    assert np.array_equal(_labels(onnxpress.load(tmp_path / "pipe.onnx"), X), expected)
    quantized, report = _pipelines(model, X[::2])
    assert any(r.modified for r in report.records if r.spec.startswith("qdq")) and report.checker == "passed"
    assert np.mean(_labels(quantized, X[1::2]) == expected[1::2]) >= 0.99


def test_xgboost_through_onnxmltools(tmp_path: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    pytest.importorskip("onnxmltools")
    X, y = load_breast_cancer(return_X_y=True)
    booster = xgboost.XGBClassifier(n_estimators=50, max_depth=4, random_state=0).fit(X[::2], y[::2])
    model = onnxpress.load(booster, sample=X[1::2])
    check = model.meta[CHECK_KEY]
    assert check.passed and check.outputs[0].agreement == 1.0 and check.outputs[1].relative <= 1e-4
    assert model.metadata_props["onnxpress.source.framework"] == "xgboost"
    assert "" in model.opset_imports  # onnxmltools gives ai.onnx.ml alone; int8's convert-opset needs the default domain
    out, report = _pipelines(model, X)
    assert not any(r.modified for r in report.records) and "changed nothing" in report.table(compact=True)
    (tmp_path / "xgb.pkl").write_bytes(pickle.dumps(booster))
    assert main(["import", str(tmp_path / "xgb.pkl"), "-o", str(tmp_path / "x.onnx")]) == 2  # a pickle: refused untrusted
    assert main(["import", str(tmp_path / "xgb.pkl"), "-o", str(tmp_path / "x.onnx"), "--trust-source"]) == 0
    with pytest.raises(DataError, match="rank 3"):
        onnxpress.load(booster, inputs="X:1x2x30:float32")
