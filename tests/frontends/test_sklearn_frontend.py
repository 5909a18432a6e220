"""scikit-learn frontend: real data shipped with scikit-learn, through onnxpress.load, optimize and a compression
pipeline; the import check against predict/predict_proba; bad input (pickles, specs, corrupt files, no skl2onnx)."""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

import onnxpress  # noqa: E402
from onnxpress.backends.ort.runner import make_session, run_session  # noqa: E402
from onnxpress.frontends.base import CHECK_KEY, UntrustedSourceError  # noqa: E402
from onnxpress.irpasses.core.errors import BackendUnavailableError, DataError, InvalidModelError  # noqa: E402
from onnxpress.tools.cli import main  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris  # noqa: E402


@pytest.fixture(scope="module")
def forest() -> tuple[object, np.ndarray]:
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_breast_cancer(return_X_y=True)
    return RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(X, y), X


@pytest.fixture(scope="module")
def iris_pipeline() -> tuple[object, np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y), X


@pytest.fixture(scope="module")
def regressor() -> tuple[object, np.ndarray]:
    from sklearn.ensemble import GradientBoostingRegressor

    X, y = load_diabetes(return_X_y=True)
    return GradientBoostingRegressor(n_estimators=50, random_state=0).fit(X, y), X


def _ops(model: object) -> list[str]:
    return [n.op_type for n in model.graph]  # type: ignore[attr-defined]


def _unchanged_by(model: object, pipeline: str, X: np.ndarray) -> None:
    """A pipeline with nothing to work on (int8 on ONNX-ML operators) leaves the model as it was, and says so."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, report = onnxpress.optimize(model, pipeline, samples=[{"X": X[:64].astype(np.float32)}])
    assert _ops(out) == _ops(model)
    assert not any(r.modified for r in report.records)
    assert "changed nothing" in report.table(compact=True)
    assert report.checker == "passed"


@pytest.mark.parametrize("name", ["forest", "iris_pipeline", "regressor"])
def test_real_data_imports_and_runs_pipelines(name: str, request: pytest.FixtureRequest) -> None:
    estimator, X = request.getfixturevalue(name)
    model = onnxpress.load(estimator, sample=X)
    check = model.meta[CHECK_KEY]
    assert check.passed and not check.generated and check.samples == len(X)
    for output in check.outputs:
        assert output.agreement == 1.0 if output.kind == "labels" else output.relative <= 1e-4
    props = model.metadata_props
    assert props["onnxpress.source.framework"] == "scikit-learn"
    assert props["onnxpress.source.framework_version"] == sklearn.__version__
    assert props["onnxpress.source.converter"] == "skl2onnx"
    assert props["onnxpress.source.options"].startswith("sample=ndarray[")
    assert "matches" in props["onnxpress.import.check"]
    _unchanged_by(model, "optimize", X)
    _unchanged_by(model, "int8", X)


def test_quantization_applies_to_an_mlp_and_keeps_its_decisions() -> None:
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((64,), max_iter=60, random_state=0).fit(X, y)
        model = onnxpress.load(mlp, sample=X)
        out, report = onnxpress.optimize(model, "int8", samples=[{"X": X[i : i + 64]} for i in range(0, 256, 64)])
    assert any(r.modified for r in report.records if r.spec.startswith("qdq"))
    labels = run_session(make_session(out), {"X": X})["label"]
    assert np.mean(labels == mlp.predict(X)) >= 0.99


def test_generated_samples_are_said(regressor: tuple[object, np.ndarray]) -> None:
    model = onnxpress.load(regressor[0])
    assert model.meta[CHECK_KEY].generated
    assert "generated random samples" in model.metadata_props["onnxpress.import.check"]


def test_lightgbm_through_onnxmltools() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    pytest.importorskip("onnxmltools")
    X, y = load_breast_cancer(return_X_y=True)
    model = onnxpress.load(lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y), sample=X)
    assert model.meta[CHECK_KEY].passed
    assert model.metadata_props["onnxpress.source.converter"] == "onnxmltools"


def test_a_mismatch_with_the_estimator_is_refused(iris_pipeline: tuple[object, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    estimator, X = iris_pipeline
    real = estimator.predict_proba
    monkeypatch.setattr(estimator, "predict_proba", lambda rows: real(rows) * 0.9, raising=False)
    with pytest.raises(InvalidModelError, match="DOES NOT match"):
        onnxpress.load(estimator, sample=X)


def test_input_spec_that_does_not_match_the_model(iris_pipeline: tuple[object, np.ndarray]) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    estimator, X = iris_pipeline
    with pytest.raises(DataError, match="3 features, the estimator was fitted on 4"):
        onnxpress.load(estimator, sample=X[:, :3])
    with pytest.raises(DataError, match="5 features"):
        onnxpress.load(estimator, initial_types=[("X", FloatTensorType([None, 5]))])


def test_pickles_need_trust_and_skops_does_not(iris_pipeline: tuple[object, np.ndarray], tmp_path: Path) -> None:
    estimator, X = iris_pipeline
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(estimator))
    with pytest.raises(UntrustedSourceError, match="trust_source=True"):
        onnxpress.load(path)
    assert onnxpress.load(path, trust_source=True, sample=X).meta[CHECK_KEY].passed
    skops_io = pytest.importorskip("skops.io")
    skops_io.dump(estimator, tmp_path / "model.skops")
    assert onnxpress.load(tmp_path / "model.skops", sample=X).meta[CHECK_KEY].passed


def test_corrupt_files(iris_pipeline: tuple[object, np.ndarray], tmp_path: Path) -> None:
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(iris_pipeline[0])[:100])
    with pytest.raises(InvalidModelError, match="could not be unpickled"):
        onnxpress.load(tmp_path / "bad.pkl", trust_source=True)
    (tmp_path / "bad.skops").write_bytes(b"not a zip file")
    with pytest.raises(InvalidModelError, match="not a readable skops file"):
        onnxpress.load(tmp_path / "bad.skops")
    with pytest.raises(InvalidModelError, match="not fitted"):
        from sklearn.linear_model import LinearRegression

        onnxpress.load(LinearRegression())


def test_converter_not_installed_names_the_extra(iris_pipeline: tuple[object, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skl2onnx", None)
    monkeypatch.setitem(sys.modules, "skl2onnx.common.data_types", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'onnxpress\[sklearn\]'"):
        onnxpress.load(iris_pipeline[0])


def test_onnx_loading_is_unchanged(mlp_file: Path) -> None:
    from onnxpress.frontends.onnx_file import load

    assert _ops(onnxpress.load(mlp_file)) == _ops(load(mlp_file))
    assert "onnxpress.source.framework" not in onnxpress.load(mlp_file).metadata_props
    with pytest.raises(InvalidModelError, match="no frontend accepts"):
        onnxpress.load(object())


def test_cli_import(iris_pipeline: tuple[object, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    skops_io = pytest.importorskip("skops.io")
    skops_io.dump(iris_pipeline[0], tmp_path / "m.skops")
    assert main(["import", str(tmp_path / "m.skops"), "-o", str(tmp_path / "m.onnx")]) == 0
    assert "scikit-learn" in capsys.readouterr().out
    assert onnxpress.load(tmp_path / "m.onnx").metadata_props["onnxpress.source.converter"] == "skl2onnx"
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(iris_pipeline[0]))
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04junk")
    for args in (["m.pkl"], ["bad.pkl", "--trust-source"], ["bad.skops"]):
        assert main(["import", str(tmp_path / args[0]), "-o", str(tmp_path / "out.onnx"), *args[1:]]) == 2
        assert not (tmp_path / "out.onnx").exists()
    err = capsys.readouterr().err
    assert "--trust-source" in err and "could not be unpickled" in err
    assert main(["import", str(tmp_path / "m.pkl"), "-o", str(tmp_path / "p.onnx"), "--trust-source", "--opset", "17"]) == 0
    assert onnxpress.load(tmp_path / "p.onnx").opset_imports[""] == 17
