"""The TensorRT backend: serialized engines from ONNX, with a JSON sidecar saying how they were built.

Works with full TensorRT or TensorRT-RTX. TensorRT-RTX builds engines on machines without a GPU (CI does);
where an engine cannot run here, ``availability`` says why in plain words.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxpress.backends.base import (
    Artifact,
    Availability,
    Backend,
    Capability,
    CompileOptions,
    NodeSupport,
    cache_dir,
    sample_shapes,
    write_atomic,
    write_json_atomic,
)
from onnxpress.backends.tensorrt.api import RTX_SUPPORTED, gpus, load_tensorrt, rtx_runs_on
from onnxpress.irpasses.cleanup.anonymize_dims import AnonymizeDims
from onnxpress.irpasses.cleanup.set_ir_version import SetIrVersion
from onnxpress.irpasses.core.errors import BackendUnavailableError, InvalidModelError
from onnxpress.irpasses.core.pass_base import Pass

MAX_IR_VERSION = 10
DEFAULT_DYNAMIC_DIM = 64


def timing_cache_path() -> Path:
    return cache_dir() / "tensorrt-timing.cache"


def sparse_eligible_layers(model: ir.Model) -> list[str]:
    """Conv/MatMul/Gemm nodes whose weight is 2:4 sparse along its input channels, the reduction axis TensorRT's
    sparse kernels group (a MatMul's K rows, a Gemm's B columns under transB, a Conv's I at each kernel position)."""
    eligible = []
    for node in model.graph:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        tensor = _weight_constant(node.inputs[1])
        if tensor is None or tensor.size < 64 or len(tensor.shape) < 2:
            continue
        w = tensor.numpy()
        if node.op_type == "Conv":
            w = np.moveaxis(w, 1, -1)  # [O, *k, I]
        elif not (node.op_type == "Gemm" and node.attributes.get_int("transB", 0)):
            w = w.T  # [N, K]
        if w.shape[-1] % 4 == 0 and np.all(np.count_nonzero(w.reshape(-1, 4), axis=1) <= 2):
            eligible.append(node.name or "?")
    return eligible


def _weight_constant(value: ir.Value) -> ir.TensorProtocol | None:
    """The constant behind a weight input: itself, or the integer tensor a DequantizeLinear reads (QDQ)."""
    if value.const_value is not None:
        return value.const_value
    producer = value.producer()
    if producer is not None and producer.op_type == "DequantizeLinear" and producer.inputs[0] is not None:
        return producer.inputs[0].const_value
    return None


def has_two_four_sparse_weights(model: ir.Model) -> bool:
    """True when some Conv/MatMul/Gemm weight is 2:4 sparse along its input channels (TensorRT's SPARSE_WEIGHTS)."""
    return bool(sparse_eligible_layers(model))


def make_logger(trt: Any, quiet_missing_gpu: bool) -> Any:
    """A TensorRT logger that keeps errors for our messages; without a GPU, TensorRT-RTX logs a harmless
    'CUDA driver version is insufficient' while building, which is dropped."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity > trt.ILogger.Severity.ERROR:
                return
            if quiet_missing_gpu and "cudaError 35" in msg:
                return
            self.errors.append(msg)
            sys.stderr.write(f"tensorrt: {msg}\n")

    return Logger()


def _dims(shape: Any) -> list[int]:
    return [int(d) for d in shape]


class TensorRTBackend(Backend):
    name = "tensorrt"
    extra = "tensorrt"

    def __init__(self, prefer: str | None = None) -> None:
        self.prefer = prefer

    @classmethod
    def availability(cls) -> Availability:
        found = load_tensorrt()
        devices = gpus()
        if found is None:
            return Availability(False, False, "neither tensorrt nor tensorrt_rtx is installed (full TensorRT has no PyPI wheels; TensorRT-RTX does)", {"gpus": devices})
        trt, flavour = found
        details = {"module": flavour, "version": trt.__version__, "gpus": devices}
        if not devices:
            return Availability(True, False, f"{flavour} {trt.__version__} builds engines here, but there is no NVIDIA GPU to run them", details)
        cc = devices[0]["compute_capability"]
        if flavour == "tensorrt-rtx" and not rtx_runs_on(cc):
            return Availability(
                True, False,
                f"TensorRT-RTX engines do not run on {devices[0]['name']} (compute capability {cc}; it runs on "
                f"{', '.join(RTX_SUPPORTED)} and above 12.0); use full TensorRT there",
                details,
            )
        return Availability(True, True, f"{flavour} {trt.__version__} on {devices[0]['name']} (compute capability {cc})", details)

    def _trt(self) -> tuple[Any, str]:
        found = load_tensorrt(self.prefer)
        if found is None:
            raise BackendUnavailableError(
                "backend 'tensorrt' needs the tensorrt or tensorrt_rtx module, and neither is installed",
                hint="pip install 'onnxpress[tensorrt]' (TensorRT-RTX from PyPI; it builds engines without a GPU)",
            )
        return found

    def legalize(self) -> list[Pass]:
        # TensorRT equates dims that share a name: paddle2onnx's "?" for both H and W would force H == W.
        return [SetIrVersion(max=MAX_IR_VERSION), AnonymizeDims()]

    def _parse(self, trt: Any, model: ir.Model, logger: Any, strongly_typed: bool) -> tuple[Any, Any, Any, str]:
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        with tempfile.TemporaryDirectory(prefix="onnxpress-trt-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            original = model.ir_version
            model.ir_version = min(original, MAX_IR_VERSION)
            try:
                ir.save(model, path, external_data="model.onnx.data")
            finally:
                model.ir_version = original
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            if not parser.parse_from_file(path):
                errors = [parser.get_error(i) for i in range(parser.num_errors)]
                shown = "; ".join(f"node '{e.node_name()}' ({e.node_operator()}): {e.desc()}" for e in errors[:3])
                raise InvalidModelError(f"TensorRT cannot parse the model: {shown}")
        return builder, network, parser, digest

    def capability(self, model: ir.Model) -> Capability:
        trt, _ = self._trt()
        logger = make_logger(trt, quiet_missing_gpu=not gpus())
        parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
        nodes = []
        for node in model.graph:
            ok = bool(parser.supports_operator(node.op_type)) if node.domain in ("", "ai.onnx") else False
            nodes.append(NodeSupport(node.name or "", node.op_type, ok, "" if ok else f"the ONNX parser has no importer for {node.domain or 'ai.onnx'}::{node.op_type}"))
        return Capability(self.name, nodes)

    def _profile_shapes(self, network: Any, options: CompileOptions) -> dict[str, tuple[list[int], list[int], list[int]]]:
        given = dict(options.shapes or {})
        from_samples = sample_shapes(options.samples) if options.samples else {}
        shapes = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = _dims(tensor.shape)
            if all(d >= 0 for d in dims):
                continue
            if tensor.name in given:
                lo, opt, hi = (list(s) for s in given[tensor.name])
            elif tensor.name in from_samples:
                lo, opt, hi = from_samples[tensor.name]
            else:
                fixed = [d if d >= 0 else (1 if axis == 0 else DEFAULT_DYNAMIC_DIM) for axis, d in enumerate(dims)]
                warnings.warn(
                    f"input '{tensor.name}' has dynamic dims {dims}; engine profile fixed to {fixed} (give --shapes or --inputs)",
                    stacklevel=3,
                )
                lo = opt = hi = fixed
            shapes[tensor.name] = (lo, opt, hi)
        return shapes

    def compile(self, model: ir.Model, options: CompileOptions, output: Path | None = None) -> Artifact:
        trt, flavour = self._trt()
        logger = make_logger(trt, quiet_missing_gpu=not gpus())
        has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph)
        strongly_typed = flavour == "tensorrt-rtx" or has_qdq
        builder, network, _parser, digest = self._parse(trt, model, logger, strongly_typed)
        config = builder.create_builder_config()
        flags = []
        sparse_layers = sparse_eligible_layers(model)
        if sparse_layers:
            config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
            flags.append("SPARSE_WEIGHTS")
        if options.extra.get("fp16") and not strongly_typed and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
            flags.append("FP16")
        cache_file: Path | None = None
        if flavour == "tensorrt":  # TensorRT-RTX: timing-cache operations are no-ops (deprecated in RTX 1.2)
            cache_file = Path(options.extra.get("timing_cache") or timing_cache_path())
            cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.exists() else b"")
            config.set_timing_cache(cache, ignore_mismatch=True)
        shapes = self._profile_shapes(network, options)
        if shapes:
            profile = builder.create_optimization_profile()
            for name, (lo, opt, hi) in shapes.items():
                profile.set_shape(name, lo, opt, hi)
            config.add_optimization_profile(profile)
        start = time.perf_counter()
        engine = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if engine is None:
            raise BackendUnavailableError(f"{flavour} failed to build an engine: {'; '.join(logger.errors[-3:]) or 'no message'}")
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp_cache = cache_file.with_suffix(".tmp")
            tmp_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
            os.replace(tmp_cache, cache_file)
        engine_bytes = bytes(memoryview(engine))
        precisions: dict[str, int] = {}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            # Strongly typed networks (TensorRT-RTX) have no per-layer precision: report the output type.
            kind = getattr(layer, "precision", None) if not strongly_typed else None
            if kind is None and layer.num_outputs:
                kind = layer.get_output(0).dtype
            key = str(kind).split(".")[-1]
            precisions[key] = precisions.get(key, 0) + 1
        sidecar = {
            "backend": self.name,
            "library": flavour,
            "library_version": trt.__version__,
            "inputs": [_io(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [_io(network.get_output(i)) for i in range(network.num_outputs)],
            "profiles": {k: {"min": v[0], "opt": v[1], "max": v[2]} for k, v in shapes.items()},
            "strongly_typed": strongly_typed,
            "qdq": has_qdq,
            "flags": flags,
            "sparse_eligible_layers": sparse_layers,
            "layer_precisions": precisions,
            "layers": network.num_layers,
            "engine_bytes": len(engine_bytes),
            "build_seconds": round(seconds, 3),
            "timing_cache": str(cache_file) if cache_file else "not used (TensorRT-RTX: timing-cache operations are no-ops)",
            "pipeline": model.metadata_props.get("onnxpress.pipeline", ""),
            "onnx_sha256": digest,
            "runs_here": self.availability().can_run,
            "availability": self.availability().reason,
        }
        if output is not None:
            output = write_atomic(output, engine_bytes)
            write_json_atomic(output.with_name(output.name + ".json"), sidecar)
        return Artifact(self.name, engine_bytes, output, {**sidecar, "threads": 0})

    def run(self, artifact: Artifact, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        status = self.availability()
        if not status.can_run:
            raise BackendUnavailableError(f"this TensorRT engine cannot run here: {status.reason}")
        return _run_engine(self._trt()[0], artifact, inputs)


def _io(tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "shape": _dims(tensor.shape), "dtype": str(tensor.dtype).split(".")[-1]}


def _run_engine(trt: Any, artifact: Artifact, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute with torch CUDA tensors as buffers (torch is on GPU machines; TensorRT brings no allocator)."""
    try:
        import torch
    except ImportError as err:
        raise BackendUnavailableError("running TensorRT engines from Python needs torch with CUDA for buffers", hint="pip install 'onnxpress[torch]'") from err
    logger = make_logger(trt, quiet_missing_gpu=False)
    engine = artifact.metadata.get("_engine")
    if engine is None:
        engine = trt.Runtime(logger).deserialize_cuda_engine(artifact.handle)
        if engine is None:
            raise BackendUnavailableError(f"TensorRT could not load the engine on this GPU: {'; '.join(logger.errors[-2:]) or 'no message'}")
        artifact.metadata["_engine"] = engine
        artifact.metadata["_context"] = engine.create_execution_context()
    context = artifact.metadata["_context"]
    buffers, outputs = {}, {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            tensor = torch.from_numpy(np.ascontiguousarray(inputs[name])).cuda()
            context.set_input_shape(name, tuple(tensor.shape))
            buffers[name] = tensor
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            shape = tuple(context.get_tensor_shape(name))
            dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int64: torch.int64}[engine.get_tensor_dtype(name)]
            buffers[name] = outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
    for name, tensor in buffers.items():
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.current_stream()
    context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return {k: v.cpu().numpy() for k, v in outputs.items()}
