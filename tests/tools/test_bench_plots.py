"""The bench's plots: rows go to the right line, and the PNG is drawn (matplotlib is an optional extra)."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnxpress.tools.bench.lowrank_suite import _series, plot


def test_lowrank_rows_go_to_their_method_lines() -> None:
    assert _series("params:0.7 whitened") == "whitened"
    assert _series("params:0.7 svd") == "plain SVD"
    assert _series("macs:0.5 whitened sequential") == "whitened + sequential refit"
    assert _series("fidelity character agreement>=0.99 whitened sequential") == "fidelity search, whitened + sequential refit"
    assert _series("int8") is None and _series("lowrank-int8 (fidelity, then int8)") is None


def test_lowrank_plot_draws_one_panel_per_model(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [{"case": f"macs:{keep} {method}", "macs_removed": 1 - keep, "params_removed": 0.5 * (1 - keep), "task": keep + 0.3}
            for keep in (0.7, 0.6, 0.5) for method in ("whitened", "svd")]
    results = {"det": {"rows": rows}, "rec": {"rows": rows + [{"case": "int8", "macs_removed": 0, "params_removed": 0, "task": 1}]}}
    path = Path(plot(results, tmp_path))
    assert path == tmp_path / "lowrank.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
