"""Real models (PP-OCRv4 det/rec, PP-OCR mobile cls, all-MiniLM-L6-v2) on real inputs.

Load -> save must be output-identical; ``cleanup`` must stay within rtol 1e-4 / atol 1e-5 (checked by the
pass manager's own numeric check, which raises otherwise) and must not change opset or signature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxpress
import pytest
from onnxpress.backends.ort.runner import make_session, run_session
from onnxpress.tools import real_models
from onnxpress.tools.cli import main

pytestmark = pytest.mark.slow


def _inputs(kind: str) -> list[dict[str, np.ndarray]]:
    if kind == "det":
        return real_models.text_pages(2)
    if kind == "rec":
        return real_models.text_lines(3, width=320)
    if kind == "cls":
        return real_models.text_lines(3, width=192)
    return real_models.minilm_samples(real_models.sentences(4))


def _path(kind: str) -> Path:
    return real_models.minilm_onnx() if kind == "minilm" else real_models.rapidocr_model(kind)


EXPECTED_NODES = {"det": 672, "rec": 860, "cls": 566, "minilm": 532}


@pytest.mark.parametrize("kind", ["det", "rec", "cls", "minilm"])
def test_round_trip_is_output_identical(kind: str, tmp_path: Path) -> None:
    src = _path(kind)
    model = onnxpress.load(src)
    assert len(model.graph) == EXPECTED_NODES[kind]
    out = tmp_path / "rt.onnx"
    onnxpress.save(model, out)
    samples = _inputs(kind)
    ref, got = make_session(src), make_session(out)
    for sample in samples:
        a, b = run_session(ref, sample), run_session(got, sample)
        for name in a:
            np.testing.assert_array_equal(b[name], a[name], err_msg=f"{kind}: output {name}")


@pytest.mark.parametrize("kind", ["det", "rec", "cls", "minilm"])
def test_cleanup_keeps_outputs_on_real_inputs(kind: str) -> None:
    model = onnxpress.load(_path(kind))
    signature = [(v.name, str(v.dtype)) for v in model.graph.inputs], [(v.name, str(v.dtype)) for v in model.graph.outputs]
    opsets = dict(model.opset_imports)
    out, report = onnxpress.optimize(model, "cleanup", samples=_inputs(kind), verify="each", rtol=1e-4, atol=1e-5)
    assert report.numerics is not None and all(e.within for e in report.numerics)
    assert report.checker == "passed"
    assert len(out.graph) < EXPECTED_NODES[kind]
    assert ([(v.name, str(v.dtype)) for v in out.graph.inputs], [(v.name, str(v.dtype)) for v in out.graph.outputs]) == signature
    assert dict(out.opset_imports).get("") == opsets.get("")
    if kind in ("det", "rec", "cls"):  # paddle2onnx keeps weights in Constant nodes: all lifted
        assert not [n for n in out.graph if n.op_type == "Constant"]


def test_cli_opt_on_det_with_real_pages(tmp_path: Path, capsys) -> None:
    pages = tmp_path / "pages.npz"
    np.savez(pages, x=np.stack([s["x"] for s in real_models.text_pages(2)]))
    code = main(["opt", str(real_models.rapidocr_model("det")), "-o", str(tmp_path / "det.onnx"), "-p", "cleanup", "--inputs", str(pages)])
    out = capsys.readouterr().out
    assert code == 0 and "672 nodes" in out and "-> " in out
    assert "2 sample(s) from the given sample data" in out
    assert len(ir.load(tmp_path / "det.onnx").graph) == 330


# Node counts the peers reach on the same models (tools/bench fusion, 2026-11-22: onnxslim 0.1.98 is the best
# peer on every one of them). onnxpress must not leave more nodes.
BEST_PEER_NODES = {"det": 326, "rec": 393, "cls": 179, "minilm": 293}


@pytest.mark.parametrize("kind", ["det", "rec", "cls", "minilm"])
def test_optimize_beats_the_best_peer_node_count_and_keeps_outputs(kind: str) -> None:
    model = onnxpress.load(_path(kind))
    out, report = onnxpress.optimize(model, "optimize", samples=_inputs(kind), verify="each")
    assert report.numerics is not None and all(e.within for e in report.numerics)
    assert report.checker == "passed"
    assert len(out.graph) <= BEST_PEER_NODES[kind]
    assert not [n for n in out.graph if n.domain not in ("", "ai.onnx")]  # default target: standard ops only


def test_explain_names_rules_and_near_misses() -> None:
    _, report = onnxpress.optimize(onnxpress.load(_path("minilm")), "optimize", verify="off", explain=True)
    text = report.explain_text()
    assert "simplify / MergeUnsqueezes: 6 matched" in text
    assert "near-miss at Reshape node '/bert/Reshape_1': Shape is not a constant." in text


def test_attention_fuses_for_onnxruntime_targets_only() -> None:
    samples = _inputs("minilm")
    out, report = onnxpress.optimize(onnxpress.load(_path("minilm")), "optimize", samples=samples, target="ort")
    ops = [n.op_type for n in out.graph]
    assert ops.count("MultiHeadAttention") == 6 and ops.count("Gelu") == 6 and "Softmax" not in ops
    assert report.numerics is not None and all(e.within for e in report.numerics)
    default, _ = onnxpress.optimize(onnxpress.load(_path("minilm")), "optimize", verify="off")
    assert "MultiHeadAttention" not in [n.op_type for n in default.graph]
