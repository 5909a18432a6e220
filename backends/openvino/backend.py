"""Compile ONNX models with OpenVINO for its CPU plug-in, through onnxpress's public backend API only (it began
as a separate vendor-style distribution and keeps to that API)."""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx_ir as ir
from onnxpress.backends.base import (
    Artifact,
    Availability,
    Backend,
    Capability,
    CompileOptions,
    NodeSupport,
)
from onnxpress.irpasses.core.errors import BackendUnavailableError


def _openvino():
    try:
        import openvino
    except ImportError as err:
        raise BackendUnavailableError(
            "backend 'openvino' needs the openvino package, which is not installed", hint="pip install 'onnxpress[openvino]'"
        ) from err
    return openvino


def _read(ov, model: ir.Model):
    with tempfile.TemporaryDirectory(prefix="onnxpress-ov-") as tmp:
        path = Path(tmp) / "model.onnx"
        ir.save(model, path, external_data="model.onnx.data")
        return ov.Core().read_model(str(path))


class OpenVinoBackend(Backend):
    name = "openvino"
    extra = "openvino"

    @classmethod
    def availability(cls) -> Availability:
        if importlib.util.find_spec("openvino") is None:
            return Availability(False, False, "the openvino package is not installed")
        ov = _openvino()
        devices = ov.Core().available_devices
        return Availability(True, "CPU" in devices, f"openvino {ov.__version__}, devices: {', '.join(devices)}", {"devices": devices})

    def capability(self, model: ir.Model) -> Capability:
        ov = _openvino()
        try:
            ov_model = _read(ov, model)
        except Exception as err:  # OpenVINO's frontend names the op it cannot convert
            reason = str(err).strip().splitlines()[0]
            return Capability(self.name, [NodeSupport(n.name or "", n.op_type, False, reason) for n in model.graph])
        supported = ov.Core().query_model(ov_model, "CPU")
        ok = len(supported) >= len(ov_model.get_ops()) - len(ov_model.inputs) - len(ov_model.outputs)
        return Capability(self.name, [NodeSupport(n.name or "", n.op_type, ok, "" if ok else "some converted ops unsupported on CPU") for n in model.graph])

    def compile(self, model: ir.Model, options: CompileOptions, output: Path | None = None) -> Artifact:
        ov = _openvino()
        ov_model = _read(ov, model)
        # OpenVINO's CPU plug-in defaults to bf16 on CPUs that have it (cosine 0.988 vs float on PP-OCRv4 det):
        # precision comes from the model unless the caller asks for less.
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": options.extra.get("precision", "f32")}
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = options.threads
        compiled = ov.Core().compile_model(ov_model, "CPU", config)
        if output is not None:
            ov.save_model(ov_model, str(Path(output).with_suffix(".xml")))
        return Artifact(self.name, compiled, output, {"threads": options.threads, "device": "CPU", "version": ov.__version__, **config})

    def run(self, artifact: Artifact, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        compiled = artifact.handle
        feed = {i.get_any_name(): np.asarray(inputs[i.get_any_name()]) for i in compiled.inputs}
        result = compiled(feed)
        return {o.get_any_name(): np.asarray(result[o]) for o in compiled.outputs}
