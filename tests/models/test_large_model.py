"""A model past protobuf's 2 GiB limit: load, clean up, numeric check on ORT, save, all with external data."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnxpress.tools.bench.bigmodel import generate
from onnxpress.tools.testing import digest

pytestmark = pytest.mark.slow


def test_over_2gb_model_round_trips_with_numeric_check(tmp_path: Path) -> None:
    src = tmp_path / "in" / "big.onnx"
    info = generate(src, blocks=7400, hidden=272)  # 7400 * 272 * 273 * 4 bytes = 2.2 GB
    assert info["weight_bytes"] > 2**31
    before = digest(src.parent)
    out = tmp_path / "out" / "big.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "onnxpress.tools.cli", "opt", str(src), "-o", str(out), "-p", "cleanup", "--report", str(tmp_path / "r.json")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "numeric check: 2 sample(s) from generated random inputs" in proc.stdout
    assert "output relu7399: max abs 0" in proc.stdout
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # ORT holds the weights twice at most during the check (2 x 2.2 GB), plus pages of the memory-mapped input
    # that ru_maxrss counts as they are touched: 8,195 MiB once in a full-suite run (2026-12-01), below 8 GiB
    # alone; three copies of the weights would pass 9 GiB
    assert peak_mib < 8.5 * 1024
    assert digest(src.parent) == before
    saved = onnx.load(out, load_external_data=False)
    assert len(saved.graph.node) == 3 * 7400  # the dead Sigmoid branches are gone
    assert (out.parent / "big.onnx.data").stat().st_size == info["weight_bytes"]
