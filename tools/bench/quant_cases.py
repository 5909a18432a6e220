"""Weight-only quantization cases, each run in its own process for wall time and peak memory (see quant_suite)."""

from __future__ import annotations

import sys


def onnxpress_w4(src: str, dst: str) -> None:
    from onnxpress.tools.cli import main

    code = main(["opt", src, "-o", dst, "-p", "weight-only{bits=4,block=32}", "--target", "ort", "--no-verify", "-q"])
    if code:
        raise SystemExit(code)


def ort_matmulnbits(src: str, dst: str) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(src), bits=4, block_size=32, is_symmetric=True)
    quantizer.process()
    onnx.save_model(quantizer.model.model, dst)


CASES = {"onnxpress weight-only 4-bit": onnxpress_w4, "ORT MatMulNBitsQuantizer 4-bit": ort_matmulnbits}

if __name__ == "__main__":
    CASES[sys.argv[1]](sys.argv[2], sys.argv[3])
