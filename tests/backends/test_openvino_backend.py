"""The OpenVINO backend ships in onnxpress (backends/openvino), registered through the same entry point as every
backend and imported only when asked for by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxpress
import pytest
from onnxpress.backends.base import get_backend
from onnxpress.irpasses.core.registry import default_registry
from onnxpress.tools import real_models
from onnxpress.tools.cli import main


def test_ships_with_onnxpress_and_the_core_never_imports_it() -> None:
    registry = default_registry()
    assert "openvino" in registry.names("backends")
    assert registry.origin("backends", "openvino") == "onnxpress"
    core = Path(onnxpress.__file__).parent
    for folder in ("irpasses", "frontends", "kernels"):
        for source in (core / folder).rglob("*.py"):
            text = source.read_text()
            assert "import openvino" not in text and "backends.openvino" not in text.replace(
                '"onnxpress.backends.openvino.backend:OpenVinoBackend"', ""), source


def test_missing_openvino_names_the_extra(monkeypatch, tmp_path: Path, capsys) -> None:
    backend = get_backend("openvino")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    code = main(["compile", str(real_models.rapidocr_model("cls")), "--backend", "openvino", "-o", str(tmp_path / "m.xml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not backend.availability().can_compile
    assert err == ["error: backend 'openvino' cannot be used here: the openvino package is not installed", "hint: pip install 'onnxpress[openvino]'"]


def _npz(tmp_path: Path, samples: list[dict[str, np.ndarray]]) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    for i, s in enumerate(samples):  # a folder, one sample per file: sentence lengths differ
        np.savez(path / f"{i:03d}.npz", **s)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["det", "minilm"])
def test_ort_and_openvino_agree_and_both_are_timed(kind: str, tmp_path: Path, capsys) -> None:
    if kind == "det":
        model, samples = real_models.rapidocr_model("det"), real_models.text_pages(2)
    else:
        model, samples = real_models.minilm_onnx(), real_models.minilm_samples(real_models.sentences(4))
    data = _npz(tmp_path, samples)
    code = main(["compare", str(model), "--backend", "ort", "--backend", "openvino", "--inputs", str(data), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code in (0, 3)
    assert result["compared"] == "openvino vs ort" and result["samples"] == len(samples)
    for output in result["outputs"]:
        assert output["cosine"] >= 0.9999, output
    code = main(["bench", str(model), "--backend", "ort", "--backend", "openvino", "--inputs", str(data), "--runs", "5"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == ["ort", "openvino"]
    assert all("median" in line and "1 thread(s)" in line for line in lines)


def test_openvino_compile_writes_ir(tmp_path: Path, capsys) -> None:
    code = main(["compile", str(real_models.rapidocr_model("cls")), "--backend", "openvino", "-o", str(tmp_path / "cls.xml")])
    assert code == 0 and (tmp_path / "cls.xml").is_file() and (tmp_path / "cls.bin").is_file()
    assert "runs here: yes" in capsys.readouterr().out
    assert "onnxpress.backends.openvino.backend" in sys.modules  # loaded lazily, on first use by name
