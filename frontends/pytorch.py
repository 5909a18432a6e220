"""PyTorch models in, through ``torch.onnx.export``: the dynamo (``torch.export`` + onnxscript) path first, the
TorchScript path when dynamo cannot capture the model.

Sources: an ``nn.Module`` with ``example_inputs=``; a ``torch.export`` ``.pt2`` (weights-only format, no trust
needed); a TorchScript ``.pt``/``.jit`` archive or a whole pickled module (``.pth``), which run code when
loaded and so need ``trust_source``. The lowered model is checked against eager PyTorch on the example inputs.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxpress.frontends.base import (
    CHECK_KEY,
    PROVENANCE_KEY,
    ImportCheck,
    OutputCheck,
    Provenance,
    compare_values,
    lowered,
    refuse_untrusted,
    require,
    version_of,
)
from onnxpress.frontends.input_spec import InputSpec, input_specs
from onnxpress.irpasses.core.errors import DataError, InvalidModelError

EXTRA = "torch"
TRUSTED_SUFFIXES = (".pt2",)
CODE_SUFFIXES = (".pt", ".jit", ".pth")


def _is_torch_object(source: object) -> bool:
    return any(c.__module__.startswith("torch.") and c.__name__ in ("Module", "ExportedProgram") for c in type(source).__mro__)


def _read(path: Path, trust_source: bool, torch: Any) -> Any:
    if not path.is_file():
        raise InvalidModelError(f"model file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix in CODE_SUFFIXES and not trust_source:
        raise refuse_untrusted(path, "TorchScript archive or pickled module (it holds pickles)")
    try:
        if suffix == ".pt2":
            return torch.export.load(str(path))
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError:
            if suffix != ".pth":
                raise
            return torch.load(str(path), map_location="cpu", weights_only=False)  # trusted: the caller opted in
    except Exception as err:
        raise InvalidModelError(f"'{path}' could not be loaded by torch {torch.__version__}: {type(err).__name__}: {str(err)[:300]}",
                                hint="the file may be truncated, or written by an incompatible torch version") from err


def _as_tuple(inputs: Any) -> tuple[Any, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _flat(outputs: Any) -> list[Any]:
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in _flat(o)]
    if isinstance(outputs, dict):
        return [t for o in outputs.values() for t in _flat(o)]
    return [outputs]


def _export(module: Any, example: tuple[Any, ...], torch: Any, opset: int | None, dynamic_shapes: Any,
            input_names: Sequence[str] | None, output_names: Sequence[str] | None) -> tuple[Any, str]:
    """ModelProto and the exporter path used: dynamo first; TorchScript when dynamo cannot capture the model."""
    scripted = isinstance(module, torch.jit.ScriptModule)
    kwargs: dict[str, Any] = {"input_names": list(input_names) if input_names else None,
                              "output_names": list(output_names) if output_names else None}
    if opset is not None:
        kwargs["opset_version"] = opset
    failure: Exception | None = None
    if not scripted:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(module, example, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False, **kwargs)
            return program.model_proto, "torch.onnx.export (dynamo)"
        except Exception as err:  # noqa: BLE001 - the TorchScript exporter below is the documented fallback
            failure = err
    if dynamic_shapes is not None and not scripted:
        raise InvalidModelError(f"torch.onnx.export (dynamo) failed: {type(failure).__name__}: {str(failure)[:400]}") from failure
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, buffer, dynamo=False, **kwargs)
    except Exception as err:
        raise InvalidModelError(
            f"torch {torch.__version__} cannot export {type(module).__name__}: {type(err).__name__}: {str(err)[:400]}"
            + (f" (dynamo path: {type(failure).__name__}: {str(failure)[:200]})" if failure else "")
        ) from err
    if failure is not None:
        warnings.warn(f"dynamo export failed ({type(failure).__name__}); used the TorchScript exporter", stacklevel=3)
    import onnx

    return onnx.load_model_from_string(buffer.getvalue()), "torch.onnx.export (TorchScript)"


def _check(model: ir.Model, module: Any, example: tuple[Any, ...], torch: Any) -> ImportCheck:
    from onnxpress.backends.ort.runner import make_session, run_session

    tensors = [t for t in _flat(example) if isinstance(t, torch.Tensor)]
    if len(tensors) != len(model.graph.inputs):
        raise DataError(f"example_inputs hold {len(tensors)} tensors, the exported model takes {len(model.graph.inputs)} inputs")
    feeds = {v.name: t.detach().cpu().numpy() for v, t in zip(model.graph.inputs, tensors, strict=True)}
    with torch.no_grad():
        reference = [t.detach().cpu().numpy() for t in _flat(module(*example)) if isinstance(t, torch.Tensor)]
    got = list(run_session(make_session(model), feeds).values())
    outputs: list[OutputCheck] = [compare_values(v.name, r, g) for v, r, g in zip(model.graph.outputs, reference, got, strict=False)]
    if len(reference) != len(got):
        outputs.append(OutputCheck(f"{len(got)} outputs vs {len(reference)} from torch", "values", float("inf")))
    return ImportCheck("torch eager", int(np.shape(tensors[0])[0]) if tensors and np.ndim(tensors[0]) else 1, False, outputs)


def _from_specs(specs: list[InputSpec], torch: Any, seed: int, what: str) -> tuple[Any, ...]:
    """Random example tensors for input specs; a dynamic dimension gets 2 (torch.export specializes 0 and 1)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        if spec.shape is None:
            raise DataError(f"input spec '{spec.text()}' for {what} needs a shape: a PyTorch model declares none")
        shape = spec.fixed_shape(default=2)
        dtype = getattr(torch, (spec.dtype or np.dtype(np.float32)).name, None)
        if dtype is None:
            raise DataError(f"input spec '{spec.text()}': torch has no dtype {spec.dtype}")
        if dtype.is_floating_point:
            tensors.append(torch.rand(shape, generator=generator, dtype=dtype))
        elif dtype == torch.bool:
            tensors.append(torch.rand(shape, generator=generator) < 0.5)
        else:
            tensors.append(torch.randint(0, 2, shape, generator=generator, dtype=dtype))
    return tuple(tensors)


def _from_sample(sample: Any, specs: list[InputSpec], torch: Any, what: str) -> tuple[tuple[Any, ...], list[str] | None]:
    """Example tensors from arrays: one array, or {name: array} in the specs' order (else the dict's)."""
    if not isinstance(sample, dict):
        return (torch.from_numpy(np.ascontiguousarray(sample)),), None
    names = [s.name for s in specs] or list(sample)
    missing = [n for n in names if n not in sample]
    if missing:
        raise DataError(f"sample= for {what} lacks {', '.join(missing)} (it has {', '.join(sample)})")
    return tuple(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in names), names


def _dynamic_shapes(specs: list[InputSpec], torch: Any) -> tuple[dict[int, Any], ...] | None:
    """torch.export dims for the specs' dynamic dimensions: one Dim per name, so equal names stay equal."""
    dims: dict[str, Any] = {}
    shapes = []
    for spec in specs:
        axes = {}
        for axis, d in enumerate(spec.shape or ()):
            if not isinstance(d, int):
                key = d if isinstance(d, str) else f"{spec.name}_{axis}"
                axes[axis] = dims.setdefault(key, torch.export.Dim(key if key.isidentifier() else f"d{len(dims)}"))
        shapes.append(axes)
    return tuple(shapes) if any(shapes) else None


class PytorchFrontend:
    """``nn.Module`` objects, ``torch.export`` programs (.pt2), TorchScript archives (trusted only)."""

    name = "pytorch"
    extra = EXTRA

    def accepts(self, source: object) -> bool:
        if isinstance(source, (str, os.PathLike)):
            return Path(source).suffix.lower() in (*TRUSTED_SUFFIXES, *CODE_SUFFIXES)
        return _is_torch_object(source)

    def lower(
        self,
        source: Any,
        *,
        trust_source: bool = False,
        example_inputs: Any = None,
        dynamic_shapes: Any = None,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        inputs: Any = None,
        sample: Any = None,
        target_opset: int | None = None,
        check: bool = True,
        seed: int = 0,
    ) -> ir.Model:
        """Export and check. ``example_inputs``: a tensor or tuple of tensors (a .pt2 brings its own);
        ``dynamic_shapes``: as ``torch.export`` takes them (e.g. ``{"x": {0: torch.export.Dim("batch")}}``).
        ``inputs``: specs (``"x:?x3x224x224:float32"``, CLI ``--input``) standing in for both where they are
        not given: random example tensors (the check says so), input names, and a dynamic dimension per ``?``
        or name. ``sample``: arrays (one, or {name: array} in the forward's order) used as ``example_inputs``."""
        torch = require("torch", "PyTorch", EXTRA)
        require("onnxscript", "PyTorch", EXTRA)
        what = f"'{source}'" if isinstance(source, (str, os.PathLike)) else type(source).__name__
        model_obj = _read(Path(source), trust_source, torch) if isinstance(source, (str, os.PathLike)) else source
        if isinstance(model_obj, torch.export.ExportedProgram):
            if example_inputs is None and model_obj.example_inputs is not None:
                example_inputs = model_obj.example_inputs[0]
            exportable, eager = model_obj, model_obj.module()
        elif isinstance(model_obj, torch.nn.Module):
            exportable = eager = model_obj.eval()
        else:
            raise InvalidModelError(f"{what} holds a {type(model_obj).__name__}, not a torch.nn.Module or ExportedProgram")
        specs = input_specs(inputs)
        generated = False
        if sample is not None and example_inputs is None:
            example_inputs, names = _from_sample(sample, specs, torch, what)
            input_names = input_names or names
        if specs and example_inputs is None:
            example_inputs, generated = _from_specs(specs, torch, seed, what), True
            input_names = input_names or [s.name for s in specs]
            if dynamic_shapes is None and not isinstance(model_obj, torch.export.ExportedProgram):
                dynamic_shapes = _dynamic_shapes(specs, torch)
        if example_inputs is None:
            raise DataError(f"{what}: example_inputs= is needed to export a PyTorch model (a tensor or a tuple of tensors)",
                            hint="or input specs: inputs=['x:1x3x224x224:float32'] (CLI: --input x:1x3x224x224:float32)")
        example = _as_tuple(example_inputs)
        try:
            with torch.no_grad():
                eager(*example)
        except Exception as err:
            given = "input specs " + ", ".join(s.text() for s in specs) if generated else "example_inputs"
            raise DataError(f"{given} do not fit {what}: {type(err).__name__}: {str(err).strip()[:300]}",
                            hint="give tensors of the shapes and dtypes the model's forward() takes") from err
        start = time.perf_counter()
        proto, converter = _export(exportable, example, torch, target_opset, dynamic_shapes, input_names, output_names)
        model = lowered(proto)
        seconds = time.perf_counter() - start
        model.meta[PROVENANCE_KEY] = Provenance("torch", torch.__version__, converter,
                                                f"torch {torch.__version__}, onnxscript {version_of('onnxscript')}",
                                                str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__)
        if check:
            try:
                result = _check(model, eager, example, torch)
            except DataError:
                raise
            except Exception as err:
                raise DataError(f"{what}: the import check could not run the example inputs: {type(err).__name__}: {err}") from err
            result.seconds, result.generated = seconds, generated
            model.meta[CHECK_KEY] = result
            result.raise_if_failed(what, converter)
        return model


FRONTEND = PytorchFrontend()
