"""Plots of results people compare: per-layer quantization sensitivity from an ``opt --report`` JSON.

matplotlib is an optional extra (``pip install 'onnxpress[plot]'``); without it the command says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from onnxpress.irpasses.core.errors import DataError
from onnxpress.tools.report_html.figures import draw_sensitivity, pyplot


def sensitivity_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-layer table from a report written by ``onnxpress opt --report`` (or its ``report`` part)."""
    body = report.get("report", report)
    rows = (body.get("quantization") or {}).get("sensitivity")
    if not rows:
        raise DataError("the report holds no per-layer sensitivity table", hint="run a pipeline with a fidelity target and --sensitivity-table, e.g. -p auto --sensitivity-table --report R.json (without it, a search whose every layer quantized meets the target scores none)")
    return rows


def plot_sensitivity(report_path: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Bar chart of 1 - fidelity with only that layer quantized, in graph order, coloured by the level chosen."""
    plt = pyplot()
    body = json.loads(Path(report_path).read_text())
    rows = sensitivity_rows(body)
    fidelity = (body.get("report", body).get("quantization") or {}).get("fidelity", {})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(rows)), 4.0))
    draw_sensitivity(ax, rows)
    ax.set_title(f"per-layer sensitivity; target {fidelity.get('target', '?')}, reached {fidelity.get('reached', float('nan')):.5f}")
    return save_png(plt, fig, output)


def save_png(plt: Any, fig: Any, output: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Write ``fig`` to ``output`` atomically (a partial PNG never takes the name) and close it."""
    fig.tight_layout()
    out = Path(output)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def plot_share_curves(results: dict[str, Any], output: str | os.PathLike[str]) -> Path:
    """Task metric against the share of prunable weights at 2:4, one line per model (``tools/bench sparsity``'s
    ``sparsity_curve`` results)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for name, result in results.items():
        points = result["curve"]
        ax.plot([100 * p["share"] for p in points], [p["task"] for p in points], marker=".", label=name)
    ax.set_xlabel("prunable weights at 2:4 (%)")
    ax.set_ylabel("task metric vs float (retrieval / IoU / characters)")
    ax.set_title("2:4 one layer at a time, least damaging first (SparseGPT + permutation)")
    ax.legend()
    return save_png(plt, fig, output)


def plot_size_fidelity(results: dict[str, Any], output: str | os.PathLike[str]) -> Path:
    """One panel per model: compression ratio (entropy-coded file vs float) against the task metric, one point
    per pipeline, so a Pareto front reads off directly. ``results``: ``tools/bench compress`` output."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        for row in result["rows"]:
            ax.scatter(row["packed_ratio"], row["task"], s=30)
            ax.annotate(row["pipeline"].split(" (")[0], (row["packed_ratio"], row["task"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_title(f"{name} (float {result['float_bytes'] / 1e6:.1f} MB)")
        ax.set_xlabel("x smaller than float (entropy-coded file)")
        ax.set_ylabel("task metric vs float (retrieval / IoU / characters)")
        ax.grid(alpha=0.3)
    return save_png(plt, fig, output, dpi=130)


def plot_tradeoff_panels(panels: dict[str, dict[str, Any]], output: str | os.PathLike[str], title: str = "") -> Path:
    """One panel per model: a task metric against a share removed, one line per method (points sorted by x; a
    lone point is a marker), and the issue's bar as dashed lines (``bar``: (x %, y), the corner to reach; x None: y alone).
    ``panels``: {name: {"xlabel", "ylabel", "series": {label: [(x, y), ...]}, "bar": (x, y) or None}}."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (name, panel) in zip(axes[0], panels.items(), strict=True):
        for label, points in panel["series"].items():
            points = sorted(points)
            style = {"marker": "o", "markersize": 4} if len(points) > 1 else {"marker": "*", "markersize": 10, "linestyle": "none"}
            ax.plot([x for x, _ in points], [y for _, y in points], label=label, **style)
        if panel.get("bar"):
            x, y = panel["bar"]
            ax.axhline(y, color="grey", linestyle="--", linewidth=0.8)
            if x is not None:
                ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(name)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(plt, fig, output, dpi=130)
