"""The ONNX Runtime backend: sessions with chosen threads, optimization level and providers, our kernel library
(domain ``onnxpress``) and onnxruntime-extensions registered when a model uses them, the IR version capped for
the installed runtime, and optional saving of ORT's optimized model and profiles."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxpress.backends.base import Artifact, Availability, Backend, Capability, CompileOptions, NodeSupport
from onnxpress.backends.ort.runner import log_level, max_ir_version, model_source, uses_kernels
from onnxpress.irpasses.cleanup.set_ir_version import SetIrVersion
from onnxpress.irpasses.core.errors import BackendUnavailableError
from onnxpress.irpasses.core.pass_base import Pass

CONTRIB_DOMAIN = "ai.onnx.contrib"
KERNELS_DOMAIN = "onnxpress"
_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@functools.lru_cache(maxsize=1)
def _kernels() -> dict[tuple[str, str, str], list[tuple[int, int]]]:
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    table: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    for d in C.get_all_opkernel_def():
        table.setdefault((d.provider, d.domain or "", d.op_name), []).append(tuple(d.version_range))
    return table


def _since_version(op: str, domain: str, opset: int) -> int | None:
    try:
        return onnx.defs.get_schema(op, max_inclusive_version=opset, domain=domain).since_version
    except onnx.defs.SchemaError:
        return None


def _has_function_body(op: str, opset: int) -> bool:
    try:
        schema = onnx.defs.get_schema(op, max_inclusive_version=opset, domain="")
    except onnx.defs.SchemaError:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def register_custom_ops(options: ort.SessionOptions) -> bool:
    """Register onnxruntime-extensions (for ``ai.onnx.contrib`` ops); False if not installed."""
    try:
        import onnxruntime_extensions
    except ImportError:
        return False
    options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    return True


class OrtBackend(Backend):
    name = "ort"
    extra = None  # onnxruntime is a core dependency

    @classmethod
    def availability(cls) -> Availability:
        providers = ort.get_available_providers()
        return Availability(True, True, f"onnxruntime {ort.__version__}, providers: {', '.join(providers)}", {"providers": providers})

    def __init__(self, providers: list[str] | None = None) -> None:
        self.providers = providers or ["CPUExecutionProvider"]

    def capability(self, model: ir.Model) -> Capability:
        kernels = _kernels()
        nodes = []
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            domain = "" if node.domain == "ai.onnx" else node.domain
            if domain == KERNELS_DOMAIN:
                from onnxpress import kernels

                status = kernels.available()
                ok = status.ok and node.op_type in kernels.OPS
                nodes.append(NodeSupport(node.name or "", node.op_type, ok, "" if ok else f"onnxpress kernels: {status.reason}"))
                continue
            if domain == CONTRIB_DOMAIN:
                ok = _has_extensions()
                nodes.append(NodeSupport(node.name or "", node.op_type, ok, "" if ok else "needs onnxruntime-extensions: pip install 'onnxpress[kernels]'"))
                continue
            opset = model.opset_imports.get(domain, model.opset_imports.get("", 0))
            ranges = [r for p in self.providers for r in kernels.get((p, domain, node.op_type), [])]
            if not ranges and domain == "" and (node.op_type == "Constant" or _has_function_body(node.op_type, opset)):
                nodes.append(NodeSupport(node.name or "", node.op_type, True, "constant folded or expanded from its ONNX function body"))
                continue
            if not ranges:
                nodes.append(NodeSupport(node.name or "", node.op_type, False, f"no {'/'.join(self.providers)} kernel for {domain or 'ai.onnx'}::{node.op_type}"))
                continue
            since = _since_version(node.op_type, domain, opset) if domain in ("", "ai.onnx.ml") else None
            ok = since is None or any(lo <= since <= hi for lo, hi in ranges)
            nodes.append(NodeSupport(node.name or "", node.op_type, ok, "" if ok else f"no kernel for version {since} (opset {opset})"))
        return Capability(self.name, nodes)

    def legalize(self) -> list[Pass]:
        from onnxpress.irpasses.lowering.legalize_kernels import LegalizeKernels

        # N:M-sparse and few-valued weights go to our kernels where a timing on this machine says faster;
        # without the kernel library (no compiler) the model stays standard ONNX, with a warning.
        return [LegalizeKernels(require=False), SetIrVersion(max=max_ir_version())]

    def compile(self, model: ir.Model, options: CompileOptions, output: Path | None = None) -> Artifact:
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = _LEVELS[options.optimization]
        session_options.intra_op_num_threads = options.threads
        session_options.inter_op_num_threads = 1
        session_options.log_severity_level = log_level()
        metadata: dict[str, object] = {"threads": options.threads, "optimization": options.optimization, "providers": self.providers}
        if options.extra.get("optimized_model"):
            session_options.optimized_model_filepath = str(options.extra["optimized_model"])
            metadata["optimized_model"] = str(options.extra["optimized_model"])
        if options.extra.get("profile_prefix"):
            session_options.enable_profiling = True
            session_options.profile_file_prefix = str(options.extra["profile_prefix"])
        if uses_kernels(model):
            from onnxpress import kernels

            kernels.register(session_options)
        metadata["onnxpress_kernels"] = uses_kernels(model)
        uses_contrib = any(n.domain == CONTRIB_DOMAIN for n in ir.traversal.RecursiveGraphIterator(model.graph))
        if uses_contrib and not register_custom_ops(session_options):
            raise BackendUnavailableError("the model uses ai.onnx.contrib custom ops but onnxruntime-extensions is not installed", hint="pip install 'onnxpress[kernels]'")
        metadata["custom_ops"] = uses_contrib
        if output is not None:
            from onnxpress.frontends.onnx_file import save

            save(model, output, max_ir_version=max_ir_version())
        with model_source(model) as source:
            try:
                session = ort.InferenceSession(source, session_options, providers=self.providers)
            except Exception as err:
                raise BackendUnavailableError(f"onnxruntime cannot load the model: {str(err).strip().splitlines()[0]}") from err
        return Artifact(self.name, session, output, metadata)

    def run(self, artifact: Artifact, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from onnxpress.backends.ort.runner import run_session

        return run_session(artifact.handle, inputs)

    def end_profiling(self, artifact: Artifact) -> str | None:
        """Stop profiling and return the trace file (chrome://tracing format), if profiling was on."""
        path = artifact.handle.end_profiling()
        return path if path and os.path.exists(path) else None


def _has_extensions() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime_extensions") is not None
