"""Quantization from the command line: fidelity targets, the report's per-layer table, the plot, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxpress.tools.cli import main
from onnxpress.tools.testing import conv_net_proto as conv_net
from onnxpress.tools.testing import digest


@pytest.fixture
def convnet(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    onnx.save(conv_net(), folder / "net.onnx")
    rng = np.random.default_rng(5)
    np.savez(folder / "calib.npz", x=rng.uniform(-1, 1, (6, 1, 3, 16, 16)).astype(np.float32))
    return folder / "net.onnx", folder / "calib.npz"


@pytest.mark.parametrize("flag", ["--fidelity", "--target"])
def test_fidelity_target_reaches_the_report_and_the_plot(capsys, convnet: tuple[Path, Path], tmp_path: Path, flag: str) -> None:
    model, calib = convnet
    before = digest(model.parent)
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    code = main(["opt", str(model), "-o", str(out), "-p", "qdq{keep_fragile=false,min_macs=0,min_intensity=0}", "--calib", str(calib), flag, "cosine>=0.99999", "--report", str(report), "--sensitivity-table"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "fidelity target cosine>=0.99999: reached" in stdout and "(met)" in stdout
    table = json.loads(report.read_text())["report"]["quantization"]["sensitivity"]
    assert [r["node"] for r in table] == ["conv1", "conv2", "head"]
    assert digest(model.parent) == before
    pytest.importorskip("matplotlib")
    assert main(["plot", str(report), "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_search_stops_when_every_layer_quantized_meets_the_target(capsys, convnet: tuple[Path, Path], tmp_path: Path) -> None:
    """Without --sensitivity-table a search whose all-quantized trial meets the target scores no layer (one
    evaluation instead of one per layer); the plot then says how to get the table."""
    model, calib = convnet
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    pipeline = "qdq{keep_fragile=false,min_macs=0,min_intensity=0}"
    # the all-quantized trial's fidelity depends on this CPU's integer kernels: measured first, the target just under it
    common = ["opt", str(model), "-o", str(out), "-p", pipeline, "--calib", str(calib), "--report", str(report)]
    assert main([*common, "--fidelity", "cosine>=0.9"]) == 0
    reached = json.loads(report.read_text())["report"]["quantization"]["fidelity"]["reached"]
    assert 0.999 < reached < 1.0, reached
    target = f"cosine>={reached - 1e-7:.9f}"
    assert main([*common, "--fidelity", target]) == 0
    quantization = json.loads(report.read_text())["report"]["quantization"]
    assert quantization["sensitivity"] == [] and quantization["fidelity"]["met"] and quantization["fidelity"]["evaluations"] == 1
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(out).graph.node) >= 3  # every layer quantized
    capsys.readouterr()
    assert main(["plot", str(report), "-o", str(tmp_path / "s.png")]) == 2
    assert "--sensitivity-table" in capsys.readouterr().err


def test_fidelity_without_a_quantization_pass_is_refused(capsys, convnet: tuple[Path, Path], tmp_path: Path) -> None:
    model, calib = convnet
    code = main(["opt", str(model), "-o", str(tmp_path / "o.onnx"), "-p", "cleanup", "--fidelity", "cosine>=0.99"])
    assert code == 2 and "no pass in the pipeline takes a fidelity target" in capsys.readouterr().err


def test_bad_calibration_file_names_the_input(capsys, convnet: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = convnet
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((2, 1, 3, 16, 16), np.float32))
    code = main(["opt", str(model), "-o", str(tmp_path / "o.onnx"), "-p", "qdq", "--calib", str(bad), "--no-verify"])
    err = capsys.readouterr().err
    assert code == 2 and "missing x" in err and "unknown image" in err and "Traceback" not in err
