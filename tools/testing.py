"""Helpers for tests of passes, here and in plug-in packages: textual ONNX in, numerics checked with ORT."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from onnxpress.backends.ort.runner import make_session, run_session


def parse_model(text: str) -> ir.Model:
    """Build an onnx-ir model from ONNX textual syntax (``onnx.parser``)."""
    proto = onnx.parser.parse_model(text)
    onnx.checker.check_model(proto)
    return ir.serde.deserialize_model(proto)


def op_types(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def run(model: ir.Model, **inputs: np.ndarray) -> list[np.ndarray]:
    """Outputs of ``model`` on ``inputs`` with onnxruntime (no ORT graph optimization)."""
    return list(run_session(make_session(model), inputs).values())


def assert_same_outputs(before: ir.Model | onnx.ModelProto, after: ir.Model, inputs: dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-6) -> None:
    ref = run_session(make_session(before), inputs)
    got = run_session(make_session(after), inputs)
    assert list(ref) == list(got), f"outputs differ: {list(ref)} vs {list(got)}"
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=rtol, atol=atol, err_msg=f"output {name}")
