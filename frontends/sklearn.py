"""scikit-learn (and LightGBM/XGBoost) models in, through their maintained converters: ``skl2onnx`` for
scikit-learn estimators and Pipelines, ``onnxmltools`` for LightGBM and XGBoost models.

A fitted estimator object is lowered directly. Files: ``.skops`` through skops' safe loader (no trust needed
while it holds only known types); a pickle or joblib file runs code when loaded, so it needs ``trust_source``.
The lowered model is checked against the estimator's own ``predict``/``predict_proba``/``transform``.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxpress.frontends.base import (
    CHECK_KEY,
    PICKLE_SUFFIXES,
    PROVENANCE_KEY,
    ImportCheck,
    OutputCheck,
    Provenance,
    compare_labels,
    compare_values,
    lowered,
    refuse_untrusted,
    require,
    version_of,
)
from onnxpress.frontends.input_spec import InputSpec, input_specs
from onnxpress.irpasses.core.errors import DataError, InvalidModelError

EXTRA = "sklearn"
SUFFIXES = (*PICKLE_SUFFIXES, ".skops")
_ONNXMLTOOLS = {"lightgbm": "convert_lightgbm", "xgboost": "convert_xgboost"}
"""Top-level package of the model's class -> the onnxmltools converter for it."""
GENERATED_SAMPLES = 32


def _package(obj: object) -> str:
    return type(obj).__module__.split(".")[0]


def _read(path: Path, trust_source: bool) -> Any:
    """An estimator from a file; pickles only when trusted, skops through its safe loader."""
    if not path.is_file():
        raise InvalidModelError(f"model file '{path}' does not exist")
    if path.suffix.lower() == ".skops":
        skops_io = require("skops.io", "scikit-learn (.skops files)", EXTRA)
        try:
            untrusted = skops_io.get_untrusted_types(file=path)
        except Exception as err:
            raise InvalidModelError(f"'{path}' is not a readable skops file: {type(err).__name__}: {err}") from err
        if untrusted and not trust_source:
            raise refuse_untrusted(path, f"skops file holding types skops does not trust ({', '.join(untrusted[:5])})")
        try:
            return skops_io.load(path, trusted=untrusted)
        except Exception as err:
            raise InvalidModelError(f"'{path}' could not be loaded by skops: {type(err).__name__}: {err}") from err
    if not trust_source:
        raise refuse_untrusted(path, "pickle" if path.suffix.lower() != ".joblib" else "joblib pickle")
    try:
        if path.suffix.lower() == ".joblib":
            return require("joblib", "scikit-learn", EXTRA).load(path)
        with path.open("rb") as f:
            return pickle.load(f)  # noqa: S301 - the caller trusts this file (trust_source=True)
    except Exception as err:
        raise InvalidModelError(f"'{path}' could not be unpickled: {type(err).__name__}: {err}",
                                hint="the file may be truncated, or pickled by another library version") from err


def _data_types(estimator: Any) -> Any:
    """The converter's own input-type classes (onnxmltools refuses skl2onnx's, and the reverse)."""
    if _package(estimator) in _ONNXMLTOOLS:
        return require("onnxmltools.convert.common.data_types", _package(estimator), EXTRA)
    return require("skl2onnx.common.data_types", "scikit-learn", EXTRA)


def _tensor_type(dtype: np.dtype, types: Any) -> Any:
    by_kind = {"f": types.FloatTensorType, "i": types.Int64TensorType, "u": types.Int64TensorType,
               "b": types.BooleanTensorType, "U": types.StringTensorType, "O": types.StringTensorType}
    if dtype.kind not in by_kind:
        raise DataError(f"sample has dtype {dtype}; expected numbers, booleans or strings")
    return by_kind[dtype.kind]


def _input_spec(estimator: Any, initial_types: Any, sample: Any) -> tuple[list[Any], np.ndarray | None]:
    """The converter's input types and the samples to check with; refuses specs that contradict the model."""
    features = getattr(estimator, "n_features_in_", None)
    types = _data_types(estimator)
    data = None
    if sample is not None:
        data = np.asarray(sample)
        data = data[None, :] if data.ndim == 1 else data
        if data.ndim != 2:
            raise DataError(f"sample has rank {data.ndim} {list(data.shape)}; expected a 2-D array [samples, features]")
        if data.dtype.kind == "f" and data.dtype != np.float32:
            data = data.astype(np.float32)  # the ONNX-ML operators (trees, linear) compute in float32
        elif data.dtype.kind in "iu":
            data = data.astype(np.int64)
        if features is not None and data.shape[1] != features:
            raise DataError(f"sample has {data.shape[1]} features, the estimator was fitted on {features}")
    if initial_types is None:
        if data is not None:
            initial_types = [("X", _tensor_type(data.dtype, types)([None, data.shape[1]]))]
        elif features is not None:
            initial_types = [("X", types.FloatTensorType([None, int(features)]))]
        else:
            raise DataError(f"{type(estimator).__name__} does not say how many features it takes (no n_features_in_)",
                            hint="give initial_types=[('X', FloatTensorType([None, N]))] or sample=<array>")
    initial_types = list(initial_types)
    if len(initial_types) == 1 and features is not None:
        shape = getattr(initial_types[0][1], "shape", None) or []
        width = shape[-1] if shape else None
        if isinstance(width, int) and width != features:
            raise DataError(f"initial_types gives input '{initial_types[0][0]}' {width} features, "
                            f"the estimator was fitted on {features}")
    return initial_types, data


def _initial_types(specs: list[InputSpec], estimator: Any, what: str) -> list[Any]:
    """Input specs as the converter's initial types: [rows, features] each."""
    types = _data_types(estimator)
    result = []
    for spec in specs:
        if spec.shape is None or len(spec.shape) != 2:
            rank = "no shape" if spec.shape is None else f"rank {len(spec.shape)}"
            raise DataError(f"input spec '{spec.text()}' has {rank}; {what} takes a 2-D input [rows, features]")
        dims = [d if isinstance(d, int) else None for d in spec.shape]
        result.append((spec.name, _tensor_type(spec.dtype or np.dtype(np.float32), types)(dims)))
    return result


def _default_opset() -> int:
    """skl2onnx's latest tested opset: what a model with ONNX-ML operators alone declares for the default domain."""
    try:
        from skl2onnx import get_latest_tested_opset_version

        return int(get_latest_tested_opset_version())
    except ImportError:
        return 17


def _convert(estimator: Any, initial_types: list[Any], target_opset: int | None, options: dict[str, Any]) -> tuple[Any, str]:
    package = _package(estimator)
    if package in _ONNXMLTOOLS:
        onnxmltools = require("onnxmltools", package, EXTRA)
        convert = getattr(onnxmltools, _ONNXMLTOOLS[package])
        converter = "onnxmltools"
        kwargs: dict[str, Any] = {"initial_types": initial_types, "target_opset": target_opset, **options}
        if package == "lightgbm":  # plain tensors out, not a sequence of maps (convert_xgboost has no zipmap; it gives tensors)
            kwargs.setdefault("zipmap", False)
        run = lambda: convert(estimator, **kwargs)  # noqa: E731
    else:
        skl2onnx = require("skl2onnx", "scikit-learn", EXTRA)
        from sklearn.base import is_classifier

        converter = "skl2onnx"
        merged = {"zipmap": False, **options} if is_classifier(estimator) else dict(options)
        run = lambda: skl2onnx.convert_sklearn(estimator, initial_types=initial_types, target_opset=target_opset,  # noqa: E731
                                               options=merged or None)
    try:
        return run(), converter
    except Exception as err:
        raise InvalidModelError(
            f"{converter} {version_of(converter)} cannot convert {type(estimator).__name__}: "
            f"{type(err).__name__}: {str(err).strip()[:400]}",
            hint=f"{converter} supports the estimators listed in its documentation; a custom estimator needs a registered converter",
        ) from err


def _check(model: ir.Model, estimator: Any, data: np.ndarray | None, generated: bool) -> ImportCheck | None:
    """Run the lowered model in onnxruntime and the estimator on the same rows; compare what it predicts."""
    from onnxpress.backends.ort.runner import make_session, run_session
    from sklearn.base import is_classifier

    if len(model.graph.inputs) != 1 or data is None:
        return None
    name = model.graph.inputs[0].name
    try:
        got = list(run_session(make_session(model), {name: data}).values())
    except Exception as err:
        raise DataError(f"the converted model does not run on the samples ({list(data.shape)} {data.dtype}): {err}") from err
    reference = data.astype(np.float64) if data.dtype.kind == "f" else data
    outputs: list[OutputCheck] = []
    what: list[str] = []
    if hasattr(estimator, "predict"):
        predicted = estimator.predict(reference)
        labels = is_classifier(estimator) or predicted.dtype.kind in "iubOU"
        outputs.append((compare_labels if labels else compare_values)(model.graph.outputs[0].name, predicted, got[0]))
        what.append("predict")
        if is_classifier(estimator) and hasattr(estimator, "predict_proba") and len(got) > 1:
            outputs.append(compare_values(model.graph.outputs[1].name, estimator.predict_proba(reference), got[1]))
            what.append("predict_proba")
    elif hasattr(estimator, "transform"):
        outputs.append(compare_values(model.graph.outputs[0].name, estimator.transform(reference), got[0]))
        what.append("transform")
    else:
        return None
    return ImportCheck(f"{type(estimator).__name__} {'/'.join(what)}", len(data), generated, outputs)


class SklearnFrontend:
    """Fitted scikit-learn estimators and Pipelines (skl2onnx), LightGBM and XGBoost models (onnxmltools)."""

    name = "sklearn"
    extra = EXTRA

    def accepts(self, source: object) -> bool:
        if isinstance(source, (str, os.PathLike)):
            return Path(source).suffix.lower() in SUFFIXES
        return any(c.__module__.split(".")[0] in ("sklearn", *_ONNXMLTOOLS) for c in type(source).__mro__)

    def lower(
        self,
        source: Any,
        *,
        trust_source: bool = False,
        initial_types: Any = None,
        sample: Any = None,
        target_opset: int | None = None,
        options: dict[str, Any] | None = None,
        inputs: Any = None,
        check: bool = True,
        seed: int = 0,
    ) -> ir.Model:
        """Convert and check. ``initial_types``: skl2onnx input types; ``sample``: an array [rows, features]
        the input type is inferred from and the check runs on (float64 is taken as float32, the type the ONNX-ML
        operators compute in). Without either the input is float32 [N, n_features_in_] and the check uses
        generated rows. ``options``: the converter's own options (zipmap is off by default). ``inputs``: input specs
        (``"X:?x4:float32"``, CLI ``--input``) instead of ``initial_types``."""
        require("sklearn", "scikit-learn", EXTRA)
        what = f"'{source}'" if isinstance(source, (str, os.PathLike)) else type(source).__name__
        estimator = _read(Path(source), trust_source) if isinstance(source, (str, os.PathLike)) else source
        if not hasattr(estimator, "get_params"):
            raise InvalidModelError(f"{what} holds a {type(estimator).__name__}, not a scikit-learn-style estimator")
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(estimator)
        except NotFittedError as err:
            raise InvalidModelError(f"{what} is not fitted: {err}", hint="call fit() before converting") from err
        except TypeError:
            pass  # not a scikit-learn estimator class (a LightGBM Booster): its converter judges it
        if inputs is not None and initial_types is None:
            initial_types = _initial_types(input_specs(inputs), estimator, what)
        initial_types, data = _input_spec(estimator, initial_types, sample)
        generated = False
        start = time.perf_counter()
        proto, converter = _convert(estimator, initial_types, target_opset, dict(options or {}))
        model = lowered(proto)
        if "" not in model.opset_imports:  # onnxmltools' XGBoost trees: ai.onnx.ml alone; passes that add nodes need ""
            model.opset_imports[""] = target_opset or _default_opset()
        seconds = time.perf_counter() - start
        package = _package(estimator)
        framework = "scikit-learn" if package == "sklearn" else package
        model.meta[PROVENANCE_KEY] = Provenance(framework, version_of(framework), converter, version_of(converter),
                                                str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__)
        if check:
            if data is None and len(initial_types) == 1:
                width = (getattr(initial_types[0][1], "shape", None) or [None])[-1]
                if isinstance(width, int):
                    rng = np.random.default_rng(seed)
                    data, generated = rng.standard_normal((GENERATED_SAMPLES, width)).astype(np.float32), True
            result = _check(model, estimator, data, generated)
            if result is not None:
                result.seconds = seconds
                model.meta[CHECK_KEY] = result
                result.raise_if_failed(what, f"{converter} {version_of(converter)}")
        return model


FRONTEND = SklearnFrontend()
