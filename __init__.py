"""onnxpress: a compiler-style model-compression framework on ONNX.

Python API first; the CLI (``onnxpress``) is a thin layer over it::

    import onnxpress
    model = onnxpress.load("model.onnx")
    model, report = onnxpress.optimize(model, "cleanup", samples="calib.npz")
    onnxpress.save(model, "out.onnx")
    print(report.table())
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import onnx
import onnx_ir as ir
from onnxpress.frontends.onnx_file import save
from onnxpress.frontends.sample_data import as_samples, random_inputs, validated
from onnxpress.irpasses.core import (
    DataError,
    OnnxpressError,
    Pass,
    PassContext,
    PassInstrument,
    PassManager,
    PassOptionError,
    PipelineReport,
    build_passes,
)
from onnxpress.irpasses.core.numerics import DEFAULT_ATOL, DEFAULT_RTOL, NumericsCheck
from onnxpress.irpasses.core.registry import Registry, default_registry

__version__ = "0.1.0"

Verify = Literal["end", "each", "off"]


def load(
    source: Any, *, target_opset: int | None = None, decode_packed: bool = True, allow_invalid: bool = False,
    trust_source: bool = False, **options: Any,
) -> ir.Model:
    """Load a model into onnx-ir: an ONNX path, bytes or ModelProto exactly as ``frontends.onnx_file.load``
    (``target_opset``, ``decode_packed``, ``allow_invalid``), or another framework's model through its
    frontend (a fitted scikit-learn estimator with ``initial_types=`` or ``sample=``, ...). ``trust_source``
    allows files that run code when loaded (pickles); they are refused without it."""
    from onnxpress.frontends.loader import load_any

    return load_any(source, target_opset=target_opset, decode_packed=decode_packed, allow_invalid=allow_invalid,
                    trust_source=trust_source, **options)


def _first_samples(samples: Any, model: ir.Model, limit: int) -> list[dict[str, Any]]:
    picked = []
    for sample in validated(samples, model):
        picked.append(dict(sample))
        if len(picked) >= limit:
            break
    return picked


def _private_copy(model: ir.Model) -> ir.Model:
    from onnxpress.irpasses.core.snapshot import snapshot

    copy = snapshot(model)
    copy.meta.update(model.meta)  # where the model came from (external data's folder, the source path)
    return copy


def optimize(
    model: ir.Model | onnx.ModelProto | str | os.PathLike[str],
    pipeline: str | os.PathLike[str] | Sequence[Pass] = "cleanup",
    *,
    samples: Any = None,
    target: str | None = None,
    cpu: str = "portable",
    verify: Verify = "end",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    check_samples: int = 4,
    instruments: Sequence[PassInstrument] = (),
    registry: Registry | None = None,
    bisect_limit: int | None = None,
    seed: int = 0,
    explain: bool = False,
    min_cosine: float | None = None,
    sensitivity_table: bool = False,
    in_place: bool = False,
) -> tuple[Any, PipelineReport]:
    """Run a pipeline (text, recipe path, or pass list) and check the result against the input.

    ``samples``: sample/calibration data (path to .npz or folder, dict of arrays, iterable, or callable).
    ``cpu``: the deployment CPU for onnxruntime's integer kernels, portable|native|vnni|no-vnni (see
    ``irpasses.quant.cpu_target``: without VNNI, int8 weights keep to +-64).
    The numeric check uses its first ``check_samples`` samples; without samples it uses generated random
    inputs and warns. ``min_cosine`` judges outputs by cosine similarity instead of rtol/atol (the default for
    pipelines with a lossy pass is 0.99). ``explain`` records, per rewrite rule, the sites that matched and the near-misses. ``sensitivity_table``: fidelity searches score every layer for the report even when all
    layers quantized meet the target (by default they stop there). Returns the model in the form given
    (ModelProto in, ModelProto out) and the report. The given model is never modified: an ir.Model is
    optimized as a structural copy that shares its tensors (passes replace tensors, never write into them),
    unless ``in_place`` says the caller hands it over (the CLI, which loaded it for this run alone).
    """
    if verify not in ("end", "each", "off"):
        raise PassOptionError(f"verify={verify!r} is not one of 'end', 'each', 'off'")
    as_proto = isinstance(model, onnx.ModelProto)
    if isinstance(model, ir.Model):
        ir_model = model if in_place else _private_copy(model)
    else:
        ir_model = load(model)
    registry = registry or default_registry()
    passes = list(pipeline) if isinstance(pipeline, Sequence) and not isinstance(pipeline, str) else build_passes(pipeline, registry)
    sample_source = as_samples(samples)
    from onnxpress.irpasses.quant.cpu_target import integer_target

    integer_target(target, cpu)  # an unknown cpu fails before any work
    ctx = PassContext(samples=sample_source, target=target, cpu=cpu, seed=seed)
    if explain:
        ctx.extra["explain"] = []
    if sensitivity_table:
        ctx.extra["sensitivity_table"] = True
    checks: list[PassInstrument] = []
    if verify != "off":
        if sample_source is not None:
            chosen, random_ = _first_samples(sample_source, ir_model, check_samples), False
        else:
            warnings.warn("no sample data given: the numeric check uses generated random inputs", stacklevel=2)
            try:
                chosen, random_ = random_inputs(ir_model, count=2, seed=seed), True
            except DataError as err:
                warnings.warn(f"numeric check skipped: {err.message}", stacklevel=2)
                chosen = []
        if chosen:
            checks.append(
                NumericsCheck(
                    chosen, rtol=rtol, atol=atol, each=verify == "each", strict=not random_, samples_are_random=random_,
                    min_cosine=min_cosine,
                )
            )
    manager = PassManager(
        passes, ctx=ctx, instruments=[*checks, *instruments], registry=registry, bisect_limit=bisect_limit
    )
    out, report = manager.run(ir_model)
    report.explain = ctx.extra.get("explain")
    report.quantization = ctx.extra.get("quantization")
    report.details = {k: ctx.extra[k] for k in ("pruning", "permutation", "lowrank") if k in ctx.extra} or None
    previous = out.metadata_props.get("onnxpress.pipeline")
    out.metadata_props["onnxpress.pipeline"] = f"{previous},{report.pipeline}" if previous else report.pipeline
    out.metadata_props["onnxpress.version"] = __version__
    return (ir.to_proto(out) if as_proto else out), report


def run_pass(pass_: Pass | str, model: ir.Model | onnx.ModelProto, **options: Any) -> Any:
    """Run one pass by instance or name on an onnx-ir model or ModelProto; returns the same kind."""
    if isinstance(pass_, str):
        pass_ = default_registry().get_pass(pass_).from_options(options)
    as_proto = isinstance(model, onnx.ModelProto)
    ir_model = load(model)
    PassManager([pass_]).run(ir_model)
    return ir.to_proto(ir_model) if as_proto else ir_model


__all__ = ["OnnxpressError", "Pass", "PassManager", "__version__", "load", "optimize", "run_pass", "save"]
