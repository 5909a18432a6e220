"""Quantization on real models and real inputs, judged on held-out inputs (calibration and evaluation disjoint).

Tolerances sit below what tools/bench quant measured (BENCHMARKS.md) by a margin for the smaller sample sets
here: PP-OCRv4 rec int8 character accuracy 0.995 over 16 lines, MiniLM `auto` cosine 0.9990 over 320 sentences.
"""

from __future__ import annotations

import numpy as np
import onnxpress
import pytest
from onnxpress.tools import real_models
from onnxpress.tools.bench.quant_suite import ctc_decode, edit_distance
from onnxpress.tools.testing import run

pytestmark = pytest.mark.slow


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_int8_on_pp_ocr_rec_keeps_the_decoded_text() -> None:
    calibration = real_models.text_lines(8, seed=0, offset=0)
    held_out = real_models.text_lines(6, seed=1, offset=40)
    original = onnxpress.load(str(real_models.rapidocr_model("rec")))
    quantized, report = onnxpress.optimize(original, "int8", samples=calibration, verify="off")
    assert report.to_dict()["quantization"]["kept_float"]  # the cost model and fragile head leave some float
    errors = characters = 0
    for sample in held_out:
        ref, got = run(original, **sample)[0], run(quantized, **sample)[0]
        assert _cosine(ref, got) > 0.97
        ref_text, got_text = ctc_decode(ref), ctc_decode(got)
        errors += edit_distance(ref_text, got_text)
        characters += max(len(ref_text), 1)
    assert 1 - errors / characters >= 0.97


def test_auto_takes_the_dynamic_path_on_minilm_and_stays_close() -> None:
    calibration = real_models.minilm_samples(real_models.sentences(16, offset=0))
    held_out = real_models.minilm_samples(real_models.sentences(12, offset=300))
    original = onnxpress.load(str(real_models.minilm_onnx()))
    quantized, report = onnxpress.optimize(original, "auto", samples=calibration, target="ort", verify="off")
    info = report.to_dict()["quantization"]
    assert info["auto"]["method"] == "dynamic" and info["auto"]["matmul_macs"] > info["auto"]["conv_macs"]
    assert info["fidelity"]["met"]
    cosines = [_cosine(run(original, **s)[0], run(quantized, **s)[0]) for s in held_out]
    assert min(cosines) > 0.995


def test_int8_on_silero_vad_enters_its_if_and_lstm() -> None:
    """silero-vad keeps its network in an If on the sample rate, with an LSTM: int8 quantizes inside both
    branches (the 8 kHz one no sample takes keeps float activations) and stores the LSTM in int8; speech
    decisions on held-out sentences read aloud stay (bench: 0.969 int8, 1.000 int8-dynamic over 320 chunks)."""
    calibration, held_out = real_models.vad_samples(32, offset=0), real_models.vad_samples(64, offset=100)
    original = onnxpress.load(str(real_models.silero_vad_model()))
    for pipeline, bar in (("int8", 0.93), ("int8-dynamic", 0.98)):
        quantized, report = onnxpress.optimize(original, pipeline, samples=calibration, verify="off")
        stats = report.records[-1].stats if pipeline == "int8-dynamic" else next(r.stats for r in report.records if r.name == "qdq")
        assert stats["recurrent_quantized"] == 2  # one per branch
        if pipeline == "int8":
            assert stats["sites"] == 12 and any("If branch no sample took" in why for why in report.quantization["kept_float"].values())
        same = [(run(original, **s)[0].item() > 0.5) == (run(quantized, **s)[0].item() > 0.5) for s in held_out]
        assert np.mean(same) >= bar, pipeline
