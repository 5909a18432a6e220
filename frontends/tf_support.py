"""What the TensorFlow and TFLite frontends share: importing TensorFlow and tf2onnx quietly, running a tf2onnx
conversion with its log kept, and refusing a result that still holds ops tf2onnx could not convert.

tf2onnx converts with ``continue_on_error``: an op it has no handler for stays in the graph under its
TensorFlow name (``Igamma``), and the model fails later in onnxruntime with a message that names neither the
converter nor what to do. We name the op, the node and the converter version at import instead.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from types import ModuleType
from typing import Any

import numpy as np
from onnxpress.frontends.base import require, version_of
from onnxpress.frontends.input_spec import InputSpec
from onnxpress.irpasses.core.errors import InvalidModelError
from onnxpress.irpasses.core.native_output import native_stderr

CONVERTER = "tf2onnx"


def import_tensorflow(frontend: str, extra: str) -> ModuleType:
    """TensorFlow without its C++ start-up chatter (oneDNN notes, a failed cuInit on a machine without a GPU):
    TensorFlow 2.21 logs those through absl straight to file descriptor 2, whatever TF_CPP_MIN_LOG_LEVEL says, so
    the descriptor is pointed away while it loads. Its errors still reach us as exceptions."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return require("tensorflow", frontend, extra)
    with native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return require("tensorflow", frontend, extra)


def import_tf2onnx(frontend: str, extra: str) -> ModuleType:
    import_tensorflow(frontend, extra)
    tf2onnx = require("tf2onnx", frontend, extra)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf2onnx


def converter_version() -> str:
    return f"{CONVERTER} {version_of(CONVERTER)}"


@contextmanager
def quiet() -> Iterator[io.StringIO]:
    """tf2onnx and TensorFlow print to stderr and Python's log; keep it for an error message instead."""
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False  # not also to the root logger's handlers
    tf_logger = logging.getLogger("tensorflow")  # tf2onnx's TF1-style calls log deprecation notes there
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        with native_stderr() as native, redirect_stderr(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield log
    finally:
        log.write("\n".join(native))
        logger.removeHandler(handler)
        logger.propagate = propagate
        tf_logger.setLevel(level)


def convert(run: Callable[[], Any], what: str) -> Any:
    """A tf2onnx call's ModelProto; its failure as an ``InvalidModelError`` naming the converter version."""
    with quiet() as log:
        try:
            proto, _ = run()
        except Exception as err:
            said = [line for line in log.getvalue().splitlines() if "not supported" in line or "Unsupported" in line]
            raise InvalidModelError(
                f"{converter_version()} cannot convert {what}: {type(err).__name__}: {str(err).strip()[:400]}"
                + (f" ({'; '.join(said[:3])})" if said else ""),
                hint="see tf2onnx's supported-ops list; a newer tf2onnx, or --opset, may help",
            ) from err
    refuse_unconverted(proto, what)
    return proto


def refuse_unconverted(proto: Any, what: str) -> None:
    """Raise for the first node tf2onnx left as a TensorFlow op: one that is no op of its ONNX domain."""
    import onnx

    custom = {o.domain for o in proto.opset_import if o.domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")}
    left = [n for n in proto.graph.node if n.domain not in custom and not onnx.defs.has(n.op_type, n.domain or "")]
    if left:
        ops = sorted({n.op_type for n in left})
        node = left[0]
        raise InvalidModelError(
            f"{what} holds op '{node.op_type}' (node '{node.name}') that {converter_version()} cannot convert"
            + (f"; unconverted ops: {', '.join(ops)} ({len(left)} nodes)" if len(left) > 1 else ""),
            hint="replace the op in the source model, or register a tf2onnx custom-op handler for it",
        )


def tf_spec(tf: ModuleType, spec: InputSpec) -> Any:
    """A ``tf.TensorSpec`` for tf2onnx's ``input_signature``: symbolic dims become None."""
    shape = None if spec.shape is None else [d if isinstance(d, int) else None for d in spec.shape]
    return tf.TensorSpec(shape, tf.as_dtype(spec.dtype or np.float32), name=spec.name)


def generated(specs: list[InputSpec], count: int, seed: int, stack_batch_one: bool = False) -> dict[str, np.ndarray]:
    """Random inputs the check runs on when none are given (the report says so): ``count`` along axis 0 when
    it is dynamic (or 1 with ``stack_batch_one``: the TFLite check runs a batch-1 model a sample at a time),
    uniform [0, 1) for floats (images), the full range for small integers."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = list(spec.fixed_shape())
        if spec.shape and (not isinstance(spec.shape[0], int) or (stack_batch_one and spec.shape[0] == 1)):
            shape[0] = count
        dtype = spec.dtype or np.dtype(np.float32)
        if dtype.kind == "f":
            feeds[spec.name] = rng.random(shape).astype(dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            low, high = max(int(info.min), -128), min(int(info.max), 255)
            feeds[spec.name] = rng.integers(low, high + 1, shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            raise InvalidModelError(f"input '{spec.name}' has dtype {dtype}: give samples= to check the import")
    return feeds
