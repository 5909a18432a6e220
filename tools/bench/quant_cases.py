"""Quantization cases for tools/bench quant, each run in its own process (wall time and peak memory of that
process alone): ``python -m onnxpress.tools.bench.quant_cases CASE SRC CALIB DST``.

CALIB is the calibration data in onnxpress's DATA format (an .npz, axis 0 = samples, or a folder of .npz);
every tool reads the same samples. Peers get their documented best path: ORT's static quantizer runs after
``quant_pre_process`` (its recommended pre-processing), QDQ format, per-channel int8 weights, uint8
activations. ORT processes run under a 12 GiB address-space limit, so an unbounded calibrator fails cleanly
instead of taking the machine down.
"""

from __future__ import annotations

import resource
import sys
import tempfile
from pathlib import Path

MEMORY_CAP = 12 * 2**30


def _onnxpress(pipeline: str, target: str | None = None):
    def case(src: str, calib: str, dst: str) -> None:
        from onnxpress.tools.cli import main

        argv = ["opt", src, "-o", dst, "-p", pipeline, "--calib", calib, "--no-verify", "-q", "--max-ir-version", "10"]
        if target:
            argv += ["--target", target]
        code = main(argv)
        if code:
            raise SystemExit(code)

    return case


def _samples(calib: str):
    from onnxpress.frontends.sample_data import NpzSamples

    return NpzSamples(calib)


def _reader(calib: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = [dict(sample) for sample in _samples(calib)]  # a list: ORT's GPTQ deep-copies the reader
            self.position = 0

        def get_next(self):
            if self.position >= len(self.items):
                return None
            self.position += 1
            return self.items[self.position - 1]

        def rewind(self) -> None:
            self.position = 0

    return Reader()


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _preprocessed(src: str) -> str:
    """ORT's recommended pre-processing, plus an opset upgrade when the model is below 13 (its QDQ needs it)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = str(Path(tempfile.mkdtemp()) / "pre.onnx")
    model = onnx.load(src)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        model = version_converter.convert_version(model, 17)
        src = str(Path(out).with_name("converted.onnx"))
        onnx.save(model, src)
    quant_pre_process(src, out, skip_symbolic_shape=True)
    return out


def _ort_static(method: str):
    def case(src: str, calib: str, dst: str) -> None:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        _cap_memory()
        quantize_static(
            _preprocessed(src), dst, _reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}[method],
        )

    return case


def ort_dynamic(src: str, calib: str, dst: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _cap_memory()
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)


def _ort_matmulnbits(algorithm: str, gather: bool = False):
    """ORT's MatMulNBitsQuantizer, 4-bit symmetric, block 32: round-to-nearest (its default) or GPTQ on the
    calibration data; ``gather`` also quantizes Gather tables (GatherBlockQuantized), which needs the model at
    opset 21 first (the quantizer's own in-place upgrade leaves an invalid model)."""

    def case(src: str, calib: str, dst: str) -> None:
        import onnx
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits

        _cap_memory()
        model = onnx.load(src)
        options: dict = {}
        if gather:
            from onnx import version_converter

            model = version_converter.convert_version(model, 21)
            options = {"op_types_to_quantize": ("MatMul", "Gather"), "quant_axes": (("MatMul", 0), ("Gather", 1))}
        if algorithm == "gptq":
            options["algo_config"] = nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=_reader(calib), block_size=32)
        quantizer = nbits.MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True, **options)
        quantizer.process()
        onnx.save_model(quantizer.model.model, dst)

    return case


CASES = {
    "onnxpress int8": _onnxpress("int8"),
    "onnxpress auto": _onnxpress("auto"),
    "onnxpress int8 every layer": _onnxpress("convert-opset{min=17},optimize,qdq{min_macs=0,min_intensity=0},dedup-initializers,dead-code"),
    "onnxpress int8 (entropy)": _onnxpress("convert-opset{min=17},optimize,qdq{calibrator=entropy},dedup-initializers,dead-code"),
    "onnxpress auto (float fallback)": _onnxpress('convert-opset{min=17},optimize,qdq{fidelity="cosine>=0.995",eval_samples=8,sensitive=float}'),
    "onnxpress auto 0.999": _onnxpress('convert-opset{min=17},optimize,qdq{fidelity="cosine>=0.999",eval_samples=16}'),
    "onnxpress int8-dynamic": _onnxpress("int8-dynamic"),
    "onnxpress auto-dynamic": _onnxpress("auto-dynamic"),
    "onnxpress int8-smooth": _onnxpress("int8-smooth"),
    "onnxpress w4": _onnxpress("w4", target="ort"),
    "onnxpress w4 MatMul-only": _onnxpress("convert-opset{min=21},optimize,weight-only{bits=4,block=32,embeddings=false}", target="ort"),
    "onnxpress w4 RTN MatMul-only": _onnxpress("convert-opset{min=21},optimize,weight-only{bits=4,block=32,embeddings=false,method=rtn}", target="ort"),
    # the peer's exact job: quantize the MatMuls of the model as it is (no opset conversion, no graph cleanup)
    "onnxpress w4 RTN MatMul-only, no cleanup": _onnxpress("weight-only{bits=4,block=32,embeddings=false,method=rtn}", target="ort"),
    "onnxpress w4 (QDQ, opset 21)": _onnxpress("w4"),
    "onnxpress w8": _onnxpress("w8", target="ort"),
    "onnxpress w4/w8 mixed": _onnxpress('convert-opset{min=21},optimize,weight-only{bits=4,block=32,accuracy_level=4,fidelity="cosine>=0.998"}', target="ort"),
    "ORT static MinMax": _ort_static("minmax"),
    "ORT static Entropy": _ort_static("entropy"),
    "ORT dynamic": ort_dynamic,
    "ORT MatMulNBits 4-bit": _ort_matmulnbits("rtn"),
    "ORT MatMulNBits 4-bit GPTQ": _ort_matmulnbits("gptq"),
    "ORT MatMulNBits 4-bit +Gather": _ort_matmulnbits("rtn", gather=True),
}

def own_peak_mib() -> float:
    """This process's peak RSS since exec (VmHWM). Not ru_maxrss: Linux carries the parent's peak into a child
    across fork/exec, so a child of a large bench process would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    try:
        CASES[sys.argv[1]](sys.argv[2], sys.argv[3], sys.argv[4])
    except BaseException as err:  # the bench reports why a tool failed, in one line
        Path(sys.argv[4] + ".error").write_text(f"{type(err).__name__}: {err}"[:200])
        raise
    finally:
        Path(sys.argv[4] + ".peak_mib").write_text(f"{own_peak_mib():.1f}")
