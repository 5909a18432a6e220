"""The HTML report: what it shows, that it is self-contained and escaped, and that a real browser draws its plots."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import markupsafe
import numpy as np
import onnx
import pytest
from onnxpress.tools.cli import main
from onnxpress.tools.testing import conv_net_proto, mlp_proto


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """opt reports of a Conv net (auto-quant with its per-layer table) and an MLP (pruning, per-layer details)."""
    folder = tmp_path_factory.mktemp("reports")
    rng = np.random.default_rng(2)
    onnx.save_model(conv_net_proto(), folder / "net.onnx")
    # auto's pipeline without its timing on this machine (which would pick between forms by speed here)
    auto = "convert-opset{min=17},optimize,auto-quant{latency_check=false},dedup-initializers,dead-code"
    np.savez(folder / "net.npz", x=rng.standard_normal((8, 1, 3, 16, 16)).astype(np.float32))
    onnx.save_model(mlp_proto(hidden=32), folder / "mlp.onnx")
    np.savez(folder / "mlp.npz", x=rng.standard_normal((16, 2, 8)).astype(np.float32))
    assert main(["opt", str(folder / "net.onnx"), "-o", str(folder / "net.q.onnx"), "-p", auto, "--calib", str(folder / "net.npz"),
                 "--fidelity", "cosine>=0.9999", "--sensitivity-table", "--report", str(folder / "net.json"), "-q"]) == 0
    assert main(["opt", str(folder / "net.onnx"), "-o", str(folder / "net.q2.onnx"), "-p", auto, "--calib", str(folder / "net.npz"),
                 "--report", str(folder / "net.html"), "-q"]) == 0
    assert main(["opt", str(folder / "mlp.onnx"), "-o", str(folder / "mlp.p.onnx"),
                 "-p", "prune{pattern=unstructured,sparsity=0.5,min_elements=64}",
                 "--calib", str(folder / "mlp.npz"), "--min-cosine", "0.5", "--report", str(folder / "mlp.json"), "-q"]) == 0
    return {"net": folder / "net.json", "net_html": folder / "net.html", "mlp": folder / "mlp.json", "folder": folder}


def _external_references(page: str) -> list[str]:
    """Anything the browser would fetch: src/href to another host, stylesheets, imports, url(...)."""
    found = re.findall(r'(?:src|href)\s*=\s*"(?!#)([^"]+)"', page)
    found += re.findall(r"<link\b[^>]*>", page) + re.findall(r"@import|url\((?!#)[^)]*\)", page)
    return found


def test_opt_report_page_holds_passes_ops_numerics_and_layers(reports: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "one.html"
    assert main(["report", str(reports["net"]), "-o", str(out)]) == 0
    page = out.read_text()
    payload = json.loads(reports["net"].read_text())
    for record in payload["report"]["records"]:
        if record["modified"]:
            assert str(markupsafe.escape(record["spec"])) in page
    assert "Numeric check per output" in page and "Per-layer sensitivity" in page and "Op histogram" in page
    assert page.count("<svg") >= 3  # pass profile, op histogram, sensitivity
    embedded = re.search(r'<script type="application/json" id="onnxpress-data">(.*?)</script>', page, re.S)
    assert embedded and json.loads(embedded.group(1)) == json.loads(json.dumps(payload))
    assert _external_references(page) == []


def test_opt_writes_html_when_the_report_name_says_so(reports: dict[str, Path]) -> None:
    page = reports["net_html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "onnxpress report: net.onnx" in page


def test_several_reports_side_by_side_with_a_front(reports: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "two.html"
    assert main(["report", str(reports["net"]), str(reports["mlp"]), "-o", str(out)]) == 0
    page = out.read_text()
    assert 'id="cand-0"' in page and 'id="cand-1"' in page and "Pruning per layer" in page
    assert 'data-plot="pareto-size"' in page and 'href="#cand-' in page  # points link to their sections


def test_model_names_cannot_inject_markup(reports: dict[str, Path], tmp_path: Path) -> None:
    payload = json.loads(reports["net"].read_text())
    payload["report"]["quantization"]["sensitivity"][0]["node"] = "<img src=x onerror=alert(1)>"
    payload["report"]["numerics"][0]["name"] = "</script><script>alert(2)</script>"
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(payload))
    assert main(["report", str(hostile), "-o", str(tmp_path / "h.html")]) == 0
    page = (tmp_path / "h.html").read_text()
    assert "<img src=x" not in page and "<script>alert(2)" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_bad_report_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.json").write_text('{"something": 1}')
    assert main(["report", str(tmp_path / "x.json"), "-o", str(tmp_path / "x.html")]) == 2
    assert "not an onnxpress opt report" in capsys.readouterr().err and not (tmp_path / "x.html").exists()
    assert main(["report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "x.html")]) == 2


def _chromium_or_skip() -> None:
    from onnxpress.tools.report_html.browser import find_chromium

    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing under CI (tools/dev installs Debian's chromium when it runs as root)")
        pytest.skip("no Chromium here (apt-get install chromium)")


def test_chromium_draws_every_visible_plot(reports: dict[str, Path], tmp_path: Path) -> None:
    """A headless browser (no network) loads the opt page and a sweep page; their plots are laid out with content
    and the screenshot shows the red Pareto points."""
    _chromium_or_skip()
    from onnxpress.tools.report_html.browser import rendered_marks, screenshot

    marks = rendered_marks(reports["net_html"])
    assert marks.get("plots-visible", 0) >= 2 and marks["plots-drawn"] == marks["plots-visible"], marks
    sweep = tmp_path / "sweep"
    folder = reports["folder"]
    assert main(["sweep", str(folder / "mlp.onnx"), "--calib", str(folder / "mlp.npz"), "--pipelines",
                 "optimize;w8;int8-dynamic;prune{pattern=unstructured,sparsity=0.5,min_elements=64}", "-o", str(sweep), "--runs", "5"]) == 0
    marks = rendered_marks(sweep / "report.html")
    assert marks.get("plots-visible", 0) == 2 and marks["plots-drawn"] == 2, marks  # size and latency fronts
    from PIL import Image

    png = screenshot(sweep / "report.html", tmp_path / "sweep.png", height=1400)
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red = (abs(pixels[..., 0] - 0xD0) < 12) & (abs(pixels[..., 1] - 0x40) < 12) & (abs(pixels[..., 2] - 0x40) < 12)
    assert red.sum() > 50, "the Pareto points (red) were not drawn"
    # text and plot lines cover about 2 % of the top 1,400 px (1.95 % on one CI run, more with fewer report
    # lines above the plots); a page that failed to render has none
    assert (pixels.sum(axis=-1) < 600).mean() > 0.005, "the page is nearly blank"


def test_opt_on_another_frameworks_model_reports_its_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .skops model goes through its frontend first; the import (converter, check) is part of the run's report."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    skops_io = pytest.importorskip("skops.io")
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    skops_io.dump(sklearn.LogisticRegression(max_iter=500).fit(x, y), tmp_path / "iris.skops")
    assert main(["opt", str(tmp_path / "iris.skops"), "-o", str(tmp_path / "iris.onnx"), "-p", "optimize",
                 "--report", str(tmp_path / "iris.json")]) == 0
    assert "import: sklearn via skl2onnx" in capsys.readouterr().out
    payload = json.loads((tmp_path / "iris.json").read_text())
    assert payload["import"]["source.frontend"] == "sklearn" and "matches" in payload["import"]["import.check"]
    assert main(["report", str(tmp_path / "iris.json"), "-o", str(tmp_path / "iris.html")]) == 0
    assert "<h3>Import</h3>" in (tmp_path / "iris.html").read_text()


def test_opt_takes_a_pickled_model_only_with_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    sklearn = pytest.importorskip("sklearn.linear_model")
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    (tmp_path / "iris.pkl").write_bytes(pickle.dumps(sklearn.LogisticRegression(max_iter=500).fit(x, y)))
    args = ["opt", str(tmp_path / "iris.pkl"), "-o", str(tmp_path / "iris.onnx"), "-p", "optimize", "-q"]
    assert main(args) == 2 and "--trust-source" in capsys.readouterr().err and not (tmp_path / "iris.onnx").exists()
    assert main([*args, "--trust-source"]) == 0 and (tmp_path / "iris.onnx").exists()
