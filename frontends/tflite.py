""".tflite models in, through tf2onnx's TFLite path, checked against the LiteRT interpreter (``ai-edge-litert``;
TensorFlow's deprecated ``tf.lite.Interpreter`` where LiteRT is not installed).

Float models must match the interpreter within 1e-4 of the output scale. A quantized model (int8/uint8/int16
tensors with a quantization scale: full-integer, or dynamic-range weights) is judged by its decisions: the
argmax over each output's last axis must agree on >= 99 % of samples, where for an integer output a choice
within one step of the interpreter's top value is a tie, not a different decision; its value errors are
reported, not judged, since the interpreter's integer kernels and onnxruntime's round differently. On generated
inputs (no samples given) a quantized model's decisions are reported, not judged: argmax over noise is no decision
the model was made for, and a box-regression output's near-ties flip at one step. A .tflite is a flatbuffer
and runs no code, so it needs no trust. Sparse weights (``DENSIFY``) are refused with the op named: tf2onnx
reads a sparse buffer as if it were dense.
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
    compare_argmax,
    compare_values,
    lowered,
    ungated,
    version_of,
)
from onnxpress.frontends.input_spec import InputSpec, input_specs, match_specs
from onnxpress.irpasses.core.errors import DataError, InvalidModelError
from onnxpress.irpasses.core.native_output import native_stderr

EXTRA = "tflite"
SUFFIXES = (".tflite",)
GENERATED_SAMPLES = 16
_QUANTIZED = ("int8", "uint8", "int16")
_UNSUPPORTED = {"DENSIFY": "sparse weights: tf2onnx reads the sparse buffer as dense"}
"""TFLite ops tf2onnx converts wrongly or not at all, with why; refused before conversion."""


def _interpreter(path: Path) -> tuple[Any, str]:
    """A LiteRT interpreter for ``path`` and which runtime it is."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        runtime = f"LiteRT {version_of('ai-edge-litert')}"
    except ImportError:
        tf = tf_support.import_tensorflow("TFLite", EXTRA)
        Interpreter, runtime = tf.lite.Interpreter, f"tf.lite {tf.__version__}"
    try:
        interpreter = Interpreter(model_path=str(path))  # parses the flatbuffer; allocate() later, after conversion
    except Exception as err:
        raise InvalidModelError(f"'{path}' is not a readable .tflite model ({runtime}): {type(err).__name__}: {str(err).strip()[:300]}",
                                hint="the file may be truncated or not a TFLite flatbuffer") from err
    return interpreter, runtime


def _allocate(interpreter: Any, path: Path, runtime: str) -> None:
    try:
        with native_stderr():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" note
            interpreter.allocate_tensors()
    except Exception as err:
        raise InvalidModelError(f"the {runtime} interpreter cannot prepare '{path}' to check the import: {type(err).__name__}: "
                                f"{str(err).strip()[:300]}", hint="check=False keeps the converted model unchecked") from err


def _declared(interpreter: Any) -> list[InputSpec]:
    specs = []
    for d in interpreter.get_input_details():
        signature = d.get("shape_signature", d["shape"])
        shape = tuple(None if int(s) < 0 else int(s) for s in signature)
        specs.append(InputSpec(d["name"], shape, np.dtype(d["dtype"])))
    return specs


def is_quantized(interpreter: Any) -> bool:
    """Any tensor held in a quantized integer type with a scale: full-integer or dynamic-range weights."""
    return any(np.dtype(t["dtype"]).name in _QUANTIZED and t["quantization"][0] != 0.0 for t in interpreter.get_tensor_details())


def _refuse_unsupported(interpreter: Any, path: Path) -> None:
    ops = getattr(interpreter, "_get_ops_details", lambda: [])()
    for op in ops:
        why = _UNSUPPORTED.get(op["op_name"])
        if why:
            tensors = interpreter.get_tensor_details()
            node = tensors[op["outputs"][0]]["name"] if len(op["outputs"]) else f"#{op['index']}"
            count = sum(o["op_name"] == op["op_name"] for o in ops)
            raise InvalidModelError(
                f"'{path}' holds op '{op['op_name']}' (node '{node}', {count} in all) that {tf_support.converter_version()} "
                f"cannot convert ({why})",
                hint="convert the model again without sparsity (the source model, before TFLite's sparsify step)",
            )


def _run_interpreter(interpreter: Any, specs: list[InputSpec], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The interpreter's outputs on ``feeds``, one sample at a time where its batch is fixed at 1."""
    details = interpreter.get_input_details()
    count = len(next(iter(feeds.values())))
    per_sample = all(s.shape and s.shape[0] == 1 for s in specs) and count > 1
    rows = [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(count)] if per_sample else [feeds]
    outputs: list[list[np.ndarray]] = []
    for row in rows:
        for d in details:
            value = row[d["name"]]
            if tuple(value.shape) != tuple(d["shape"]):
                interpreter.resize_tensor_input(d["index"], list(value.shape))
                interpreter.allocate_tensors()
            interpreter.set_tensor(d["index"], value)
        interpreter.invoke()
        outputs.append([interpreter.get_tensor(o["index"]).copy() for o in interpreter.get_output_details()])
    return [np.concatenate(parts) for parts in zip(*outputs, strict=True)]


def _run_onnx(model: ir.Model, specs: list[InputSpec], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from onnxpress.backends.ort.runner import make_session, run_session

    session = make_session(model)
    names = [v.name for v in model.graph.inputs]
    count = len(next(iter(feeds.values())))
    fixed = [v.shape is not None and len(v.shape) and v.shape[0] == 1 for v in model.graph.inputs]
    rows = [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(count)] if all(fixed) and count > 1 else [feeds]
    results = [list(run_session(session, dict(zip(names, row.values(), strict=True))).values()) for row in rows]
    return [np.concatenate(parts) for parts in zip(*results, strict=True)]


def _feeds(sample: Any, specs: list[InputSpec], seed: int, path: Path) -> tuple[dict[str, np.ndarray], bool]:
    if sample is None:
        return tf_support.generated(specs, GENERATED_SAMPLES, seed, stack_batch_one=True), True
    if not isinstance(sample, dict):
        if len(specs) != 1:
            raise DataError(f"'{path}' takes {len(specs)} inputs: give sample= as {{name: array}}")
        sample = {specs[0].name: sample}
    missing = [s.name for s in specs if s.name not in sample]
    if missing or set(sample) - {s.name for s in specs}:
        raise DataError(f"sample= for '{path}' must name exactly its inputs: {', '.join(s.text() for s in specs)}")
    feeds = {}
    for spec in specs:
        array = np.asarray(sample[spec.name])
        if spec.shape is not None and (array.ndim != len(spec.shape) or any(
                isinstance(w, int) and g != w for g, w in zip(array.shape[1:], spec.shape[1:], strict=False))):
            raise DataError(f"sample '{spec.name}' has shape {list(array.shape)}, '{path}' takes {spec.text()}")
        feeds[spec.name] = array.astype(spec.dtype) if spec.dtype is not None else array
    return feeds, False


class TfliteFrontend:
    """.tflite flatbuffers (float, float16-weight, dynamic-range and full-integer quantized), through tf2onnx."""

    name = "tflite"
    extra = EXTRA

    def accepts(self, source: object) -> bool:
        return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in SUFFIXES

    def lower(
        self,
        source: Any,
        *,
        trust_source: bool = False,
        inputs: Any = None,
        sample: Any = None,
        target_opset: int | None = None,
        check: bool = True,
        seed: int = 0,
    ) -> ir.Model:
        """Convert and check. ``inputs``: specs checked against the model's inputs (a dimension the model
        leaves dynamic may be fixed); ``sample``: an array or {name: array}, batched along axis 0 (a model with
        batch 1 is run a sample at a time); without it, generated inputs (said in the report)."""
        path = Path(source)
        if not path.is_file():
            raise InvalidModelError(f"model file '{path}' does not exist")
        tf2onnx = tf_support.import_tf2onnx("TFLite", EXTRA)
        interpreter, runtime = _interpreter(path)
        declared = _declared(interpreter)
        specs = match_specs(input_specs(inputs), declared, f"'{path}'")
        _refuse_unsupported(interpreter, path)
        override = {s.name: [d if isinstance(d, int) else -1 for d in s.shape]
                    for s, d in zip(specs, declared, strict=True) if s.shape is not None and s.shape != d.shape}
        start = time.perf_counter()
        proto = tf_support.convert(lambda: tf2onnx.convert.from_tflite(str(path), opset=target_opset, shape_override=override or None),
                                   f"'{path}'")
        model = lowered(proto)
        seconds = time.perf_counter() - start
        model.meta[PROVENANCE_KEY] = Provenance("tflite", runtime, tf_support.CONVERTER, version_of(tf_support.CONVERTER), str(path))
        if check:
            _allocate(interpreter, path, runtime)
            quantized = is_quantized(interpreter)
            feeds, generated = _feeds(sample, specs, seed, path)
            try:
                with native_stderr():
                    expected = _run_interpreter(interpreter, specs, feeds)
            except Exception as err:
                raise DataError(f"the LiteRT interpreter could not run '{path}' on the samples: {type(err).__name__}: {err}") from err
            got = _run_onnx(model, specs, feeds)
            names = [v.name for v in model.graph.outputs]
            outputs: list[OutputCheck] = []
            steps = [1.0 if np.dtype(d["dtype"]).kind in "iu" else 0.0 for d in interpreter.get_output_details()]
            for name, ref, out, step in zip(names, expected, got, steps, strict=False):
                values = compare_values(name, ref, out)
                if quantized:  # decisions on generated noise are no decisions the model was made for: reported only
                    decisions = compare_argmax(name, ref, out, tie=step)
                    outputs += [ungated(decisions) if generated else decisions, ungated(values)]
                else:
                    outputs.append(values)
            if len(expected) != len(got):
                outputs.append(OutputCheck(f"{len(got)} outputs vs {len(expected)} from the interpreter", "values", float("inf")))
            judged = "decisions on generated inputs reported, not judged: give samples" if generated else "judged by argmax"
            reference = f"{runtime} interpreter" + (f" (quantized: {judged})" if quantized else "")
            result = ImportCheck(reference, len(next(iter(feeds.values()))), generated, outputs, seconds)
            model.meta[CHECK_KEY] = result
            result.raise_if_failed(f"'{path}'", tf_support.converter_version())
        return model


FRONTEND = TfliteFrontend()

