"""convert-opset: raise the default-domain opset to at least ``min`` (quantization needs per-axis
DequantizeLinear, opset 13; HardSwish fuses from 14). Uses onnxscript's version converter (onnx's C++
converter as fallback); a model already at or above ``min`` is left alone."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import InvalidModelError
from onnxpress.irpasses.core.pass_base import Pass, PassResult


@dataclasses.dataclass
class ConvertOpset(Pass):
    """Upgrade the model to at least opset ``min`` (no-op when it is newer)."""

    name = "convert-opset"
    min: int = 17

    def __post_init__(self) -> None:
        """An opset onnx does not know fails when the pipeline is built, not as the converter's traceback."""
        import onnx

        latest = onnx.defs.onnx_opset_version()
        if not 1 <= self.min <= latest:
            raise ValueError(f"min={self.min} is not an opset this onnx {onnx.__version__} knows (1..{latest})")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        current = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
        if current >= self.min:
            return self.result(model, False)
        from onnxscript.version_converter import convert_version

        try:
            convert_version(model, self.min, fallback=True)
        except Exception as err:  # the converter reports per-op failures in many forms
            raise InvalidModelError(f"cannot convert the model from opset {current} to {self.min}: {err}") from err
        now = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
        if now < self.min:
            raise InvalidModelError(f"the opset converter left the model at opset {now} (asked for {self.min})")
        return self.result(model, True, from_opset=current, to_opset=now)
