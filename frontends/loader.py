"""``load_any``: one entry for every source format. ONNX goes to ``onnx_file.load`` exactly as before; any
other source goes to the first registered frontend that accepts it, and the lowered model is stamped with
where it came from (framework, converter, their versions, the options, the import check).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from onnxpress.frontends import onnx_file
from onnxpress.frontends.base import CHECK_KEY, PROVENANCE_KEY, Frontend, ImportCheck, Provenance, option_text
from onnxpress.irpasses.core.errors import InvalidModelError, PassOptionError, PluginError
from onnxpress.irpasses.core.registry import Registry, default_registry

ONNX_SUFFIXES = (".onnx",)


def frontends(registry: Registry | None = None) -> list[Frontend]:
    """The registered frontends, built-ins and vendors' alike; a broken one is skipped with a warning."""
    registry = registry or default_registry()
    found: list[Frontend] = []
    for name in registry.names("frontends"):
        try:
            obj = registry.get("frontends", name)
        except PluginError as err:
            warnings.warn(f"frontend '{name}' skipped: {err.message}", stacklevel=3)
            continue
        frontend = obj() if isinstance(obj, type) else obj
        if not isinstance(frontend, Frontend):
            raise PluginError(f"frontend '{name}' from '{registry.origin('frontends', name)}' is not an onnxpress Frontend "
                              "(it needs name, extra, accepts() and lower())")
        found.append(frontend)
    return found


def _is_onnx(source: object) -> bool:
    if isinstance(source, (ir.Model, onnx.ModelProto, bytes)):
        return True
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in ONNX_SUFFIXES


def pick(source: object, registry: Registry | None = None) -> Frontend | None:
    """The frontend for ``source``: None for ONNX (and for paths no frontend claims, read as ONNX as before)."""
    if _is_onnx(source):
        return None
    return next((f for f in frontends(registry) if f.accepts(source)), None)


def load_any(
    source: Any, *, trust_source: bool = False, target_opset: int | None = None, decode_packed: bool = True,
    allow_invalid: bool = False, registry: Registry | None = None, **options: Any,
) -> ir.Model:
    """Load a model from any supported source into onnx-ir.

    ONNX (a path, bytes, ModelProto, ir.Model) goes to ``onnx_file.load`` with ``target_opset``,
    ``decode_packed`` and ``allow_invalid``, as it always did. Other sources take ``target_opset`` and their
    frontend's options (scikit-learn: ``initial_types=`` or ``sample=``). ``trust_source`` allows formats that
    run code when loaded (pickles); without it they are refused.
    """
    frontend = pick(source, registry)
    if frontend is None:
        if not _is_onnx(source) and not isinstance(source, (str, os.PathLike)):
            names = ", ".join(f.name for f in frontends(registry)) or "none"
            raise InvalidModelError(
                f"no frontend accepts a {type(source).__module__}.{type(source).__name__}",
                hint=f"give a path, bytes or onnx.ModelProto, or a model of a framework with a frontend (installed: {names})",
            )
        if options:
            raise PassOptionError(f"option(s) {', '.join(sorted(options))} do not apply to an ONNX model")
        return onnx_file.load(source, target_opset=target_opset, decode_packed=decode_packed, allow_invalid=allow_invalid)
    if not decode_packed or allow_invalid:
        raise PassOptionError("decode_packed and allow_invalid apply to ONNX models only")
    if target_opset is not None:
        options["target_opset"] = target_opset
    start = time.perf_counter()
    model = frontend.lower(source, trust_source=trust_source, **options)
    stamp(model, frontend, options, time.perf_counter() - start)
    return model


def import_record(model: ir.Model) -> dict[str, str] | None:
    """What ``stamp`` recorded (framework, converter, versions, options, time, the check against the framework),
    for reports; None for a model that did not come through a frontend."""
    props = model.metadata_props
    if "onnxpress.source.frontend" not in props:
        return None
    return {k.removeprefix("onnxpress."): v for k, v in props.items() if k.startswith(("onnxpress.source.", "onnxpress.import."))}


def stamp(model: ir.Model, frontend: Frontend, options: dict[str, Any], seconds: float) -> None:
    """Record provenance in ``metadata_props``, where it survives saving."""
    props = model.metadata_props
    provenance = model.meta.get(PROVENANCE_KEY)
    if isinstance(provenance, Provenance):
        props.update(provenance.props())
    props["onnxpress.source.frontend"] = frontend.name
    props["onnxpress.source.options"] = option_text(options)
    props["onnxpress.import.seconds"] = f"{seconds:.3f}"
    check = model.meta.get(CHECK_KEY)
    props["onnxpress.import.check"] = check.summary() if isinstance(check, ImportCheck) else "not run"
