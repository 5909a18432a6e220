"""TensorFlow and Keras models in, through ``tf2onnx`` (maintained by the ONNX project; never a converter of ours).

Sources: a Keras ``Model`` object (functional, Sequential or subclassed), a ``.keras`` / ``.h5`` file, a
SavedModel folder (one signature, ``serving_default`` unless ``signature=`` says otherwise). A ``.keras`` or
``.h5`` file holding a ``Lambda`` layer carries Python code: Keras' safe mode refuses it, and so do we without
``trust_source``. A SavedModel is a graph and runs no Python, so it needs no trust. The lowered model is
checked against Keras (``model(x, training=False)``) or the SavedModel's own signature function.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxpress.frontends import tf_support
from onnxpress.frontends.base import (
    CHECK_KEY,
    PROVENANCE_KEY,
    ImportCheck,
    OutputCheck,
    Provenance,
    compare_values,
    lowered,
    refuse_untrusted,
    version_of,
)
from onnxpress.frontends.input_spec import InputSpec, input_specs, match_specs
from onnxpress.irpasses.core.errors import DataError, InvalidModelError

EXTRA = "tensorflow"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
GENERATED_SAMPLES = 8


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt"))


def _is_keras_model(source: object) -> bool:
    return any(c.__module__.split(".")[0] in ("keras", "tf_keras") and c.__name__ == "Model" for c in type(source).__mro__)


def _load_keras(path: Path, trust_source: bool, keras: Any) -> Any:
    if not path.is_file():
        raise InvalidModelError(f"model file '{path}' does not exist")
    try:
        return keras.models.load_model(str(path), compile=False, safe_mode=not trust_source)
    except ValueError as err:
        if "safe_mode" in str(err) or "unsafe" in str(err).lower():
            raise refuse_untrusted(path, "Keras file holding Python code (a Lambda layer)") from err
        raise InvalidModelError(f"'{path}' could not be loaded by Keras {keras.__version__}: {str(err).strip()[:300]}") from err
    except Exception as err:
        raise InvalidModelError(
            f"'{path}' could not be loaded by Keras {keras.__version__}: {type(err).__name__}: {str(err).strip()[:300]}",
            hint="the file may be truncated, or not a Keras model") from err


def _keras_inputs(model: Any) -> list[InputSpec] | None:
    """What a Keras model declares (None for a subclassed model, which declares nothing until called)."""
    try:
        tensors = model.inputs
    except (AttributeError, ValueError):
        return None
    if not tensors:
        return None
    return [InputSpec(t.name, tuple(t.shape), np.dtype(str(t.dtype))) for t in tensors]


def _as_feeds(sample: Any, specs: list[InputSpec], what: str) -> dict[str, np.ndarray]:
    """``sample`` (an array for a one-input model, or {name: array}) as feeds in the inputs' dtypes."""
    if not isinstance(sample, dict):
        if len(specs) != 1:
            raise DataError(f"{what} takes {len(specs)} inputs ({', '.join(s.name for s in specs)}): give sample= as {{name: array}}")
        sample = {specs[0].name: sample}
    unknown = sorted(set(sample) - {s.name for s in specs})
    missing = [s.name for s in specs if s.name not in sample]
    if unknown or missing:
        raise DataError(f"sample= for {what}: " + "; ".join(
            ([f"names no input {unknown}"] if unknown else []) + ([f"lacks {missing}"] if missing else [])))
    feeds = {}
    for spec in specs:
        array = np.asarray(sample[spec.name])
        if spec.shape is not None and array.ndim != len(spec.shape):
            raise DataError(f"sample '{spec.name}' has shape {list(array.shape)}, {what} takes rank {len(spec.shape)} ({spec.text()})")
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape or (), strict=False)):
            if isinstance(want, int) and got != want:
                raise DataError(f"sample '{spec.name}' has {got} at dimension {axis}, {what} fixes it at {want} ({spec.text()})")
        feeds[spec.name] = array.astype(spec.dtype) if spec.dtype is not None else array
    return feeds


def _run_onnx(model: ir.Model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from onnxpress.backends.ort.runner import make_session, run_session

    names = [v.name for v in model.graph.inputs]
    return run_session(make_session(model), dict(zip(names, feeds.values(), strict=True)))


def _compare(model: ir.Model, reference: list[np.ndarray] | dict[str, np.ndarray], got: dict[str, np.ndarray]) -> list[OutputCheck]:
    names = [v.name for v in model.graph.outputs]
    if isinstance(reference, dict) and set(reference) == set(names):
        return [compare_values(n, reference[n], got[n]) for n in names]
    ref = list(reference.values()) if isinstance(reference, dict) else reference
    checks = [compare_values(n, r, got[n]) for n, r in zip(names, ref, strict=False)]
    if len(ref) != len(names):
        checks.append(OutputCheck(f"{len(names)} outputs vs {len(ref)} from TensorFlow", "values", float("inf")))
    return checks


class TensorflowFrontend:
    """Keras models (objects, .keras, .h5) and SavedModel folders, through tf2onnx."""

    name = "tensorflow"
    extra = EXTRA

    def accepts(self, source: object) -> bool:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            return path.suffix.lower() in KERAS_SUFFIXES or is_saved_model(path)
        return _is_keras_model(source)

    def lower(
        self,
        source: Any,
        *,
        trust_source: bool = False,
        inputs: Any = None,
        sample: Any = None,
        signature: str = "serving_default",
        target_opset: int | None = None,
        check: bool = True,
        seed: int = 0,
    ) -> ir.Model:
        """Convert and check. ``inputs``: specs (``"x:?x24x24x3:float32"``, see ``input_spec``), needed for a
        subclassed Keras model and checked against what the model declares; ``sample``: an array or {name:
        array} the check runs on (without it: generated inputs, said in the report)."""
        tf = tf_support.import_tensorflow("TensorFlow", EXTRA)
        tf2onnx = tf_support.import_tf2onnx("TensorFlow", EXTRA)
        path = Path(source) if isinstance(source, (str, os.PathLike)) else None
        what = f"'{source}'" if path is not None else type(source).__name__
        given = input_specs(inputs)
        start = time.perf_counter()
        if path is not None and not path.exists():
            raise InvalidModelError(f"model '{path}' does not exist")
        if path is not None and is_saved_model(path):
            proto, specs, reference = self._saved_model(path, signature, given, target_opset, tf, tf2onnx, what)
            framework = "tensorflow"
        else:
            keras = tf.keras
            model = _load_keras(path, trust_source, keras) if path is not None else source
            if not _is_keras_model(model):
                raise InvalidModelError(f"{what} holds a {type(model).__name__}, not a Keras Model")
            proto, specs, reference = self._keras(model, given, target_opset, tf, tf2onnx, what)
            framework = "keras"
        model_ir = lowered(proto)
        seconds = time.perf_counter() - start
        model_ir.meta[PROVENANCE_KEY] = Provenance(
            framework, version_of(framework), tf_support.CONVERTER, version_of(tf_support.CONVERTER),
            str(source) if path is not None else type(source).__name__)
        if check:
            generated = sample is None
            feeds = tf_support.generated(specs, GENERATED_SAMPLES, seed) if generated else _as_feeds(sample, specs, what)
            try:
                expected = reference(feeds)
            except Exception as err:
                raise DataError(f"TensorFlow could not run {what} on the samples: {type(err).__name__}: {str(err).strip()[:300]}") from err
            got = _run_onnx(model_ir, feeds)
            count = int(next(iter(feeds.values())).shape[0]) if feeds and next(iter(feeds.values())).ndim else 1
            result = ImportCheck(f"{framework} {version_of(framework)}", count, generated, _compare(model_ir, expected, got), seconds)
            model_ir.meta[CHECK_KEY] = result
            result.raise_if_failed(what, tf_support.converter_version())
        return model_ir

    @staticmethod
    def _keras(model: Any, given: list[InputSpec], opset: int | None, tf: Any, tf2onnx: Any, what: str) -> tuple[Any, list[InputSpec], Any]:
        declared = _keras_inputs(model)
        if declared is None:
            if not given or any(s.shape is None or s.dtype is None for s in given):
                raise DataError(f"{what} is a subclassed Keras model that declares no inputs: give every input's spec",
                                hint="e.g. inputs=['x:?x24x24x3:float32'] (CLI: --input x:?x24x24x3:float32)")
            specs = list(given)
        else:
            specs = match_specs(given, declared, what)
        signature = [tf_support.tf_spec(tf, s) for s in specs]
        proto = tf_support.convert(lambda: tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset), what)

        def reference(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            args = [tf.constant(feeds[s.name]) for s in specs]
            out = model(args[0] if len(args) == 1 else args, training=False)
            return [np.asarray(t) for t in tf.nest.flatten(out)]

        return proto, specs, reference

    @staticmethod
    def _saved_model(path: Path, signature: str, given: list[InputSpec], opset: int | None, tf: Any, tf2onnx: Any,
                     what: str) -> tuple[Any, list[InputSpec], Any]:
        from tf2onnx import tf_loader

        def load() -> Any:
            return tf_loader.from_saved_model(str(path), None, None, tag=["serve"], signatures=[signature],
                                              return_concrete_func=True, return_tensors_to_rename=True)

        try:
            with tf_support.quiet():
                graph_def, graph_inputs, graph_outputs, function, _imported, renames = load()
        except Exception as err:
            raise InvalidModelError(f"{what} could not be read as a SavedModel with signature '{signature}' by TensorFlow "
                                    f"{tf.__version__}: {type(err).__name__}: {str(err).strip()[:300]}",
                                    hint="the folder may be damaged; signature= picks another signature") from err
        flat = [t for t in tf.nest.flatten(function.structured_input_signature) if isinstance(t, tf.TensorSpec)]
        declared = [InputSpec(t.name, tuple(t.shape), np.dtype(t.dtype.as_numpy_dtype)) for t in flat]
        specs = match_specs(given, declared, what)
        graph_name = {renames.get(g, g): g for g in graph_inputs}
        override = {graph_name[s.name]: [d if isinstance(d, int) else -1 for d in s.shape]
                    for s, d0 in zip(specs, declared, strict=True) if s.shape is not None and s.shape != d0.shape}
        proto = tf_support.convert(lambda: tf2onnx.convert.from_graph_def(
            graph_def, name=path.name, input_names=graph_inputs, output_names=graph_outputs, opset=opset,
            shape_override=override or None, tensors_to_rename=renames), what)

        def reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray] | list[np.ndarray]:
            out = function(**{s.name: tf.constant(feeds[s.name]) for s in specs})
            if isinstance(out, dict):
                return {k: np.asarray(v) for k, v in out.items()}
            return [np.asarray(t) for t in tf.nest.flatten(out)]

        return proto, specs, reference


FRONTEND = TensorflowFrontend()
