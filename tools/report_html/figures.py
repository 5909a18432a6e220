"""The report's plots, drawn by matplotlib as inline SVG: no network and no script needed to view them, text
kept as text (searchable, sharp at any zoom), and the same bytes for the same data (fixed hash salt).

Each function returns an SVG string, or None when the report holds nothing to draw.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from onnxpress.irpasses.core.errors import BackendUnavailableError

LEVEL_COLORS = {"full": "#2b7bba", "reduced": "#f0a030", "float": "#d04040"}
FRONT_COLOR, OTHER_COLOR, ORIGINAL_COLOR = "#d04040", "#2b7bba", "#444444"
EXACT = 1e-6
"""Fidelity within this of 1 counts as unchanged in the front plots."""


def pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise BackendUnavailableError("the HTML report draws its plots with matplotlib", hint="pip install 'onnxpress[plot]'") from err
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "onnxpress", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _svg(fig: Any) -> str:
    plt = pyplot()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "onnxpress"})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG sits inside HTML


def op_histogram(before: dict[str, int], after: dict[str, int], top: int = 24) -> str | None:
    """Op counts before and after, side by side, the most common ops of either first."""
    if not before and not after:
        return None
    plt = pyplot()
    ops = sorted(set(before) | set(after), key=lambda op: -(before.get(op, 0) + after.get(op, 0)))[:top]
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(ops) + 0.9))
    y = range(len(ops))
    ax.barh([i + 0.2 for i in y], [before.get(op, 0) for op in ops], height=0.4, label="before", color="#9ab8d6")
    ax.barh([i - 0.2 for i in y], [after.get(op, 0) for op in ops], height=0.4, label="after", color="#2b7bba")
    ax.set_yticks(list(y), ops)
    ax.invert_yaxis()
    ax.set_xlabel("nodes")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _svg(fig)


def pass_profile(records: Sequence[dict[str, Any]]) -> str | None:
    """Nodes and weight bytes after each pass that changed the model, and the time it took: where the work went."""
    changed = [r for r in records if r.get("modified")]
    if not changed:
        return None
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9.5, 4.8), sharex=True)
    x = list(range(len(changed) + 1))
    top.step(x, [changed[0]["nodes_before"]] + [r["nodes_after"] for r in changed], where="post", color="#2b7bba", label="nodes")
    top.set_ylabel("nodes")
    twin = top.twinx()
    twin.step(x, [changed[0]["weight_bytes_before"] / 1e6] + [r["weight_bytes_after"] / 1e6 for r in changed], where="post",
              color="#d04040", label="weights (MB)")
    twin.set_ylabel("weights (MB)", color="#d04040")
    twin.grid(False)
    bottom.bar([i + 1 for i in range(len(changed))], [r["seconds"] for r in changed], color="#888")
    bottom.set_ylabel("seconds")
    bottom.set_xticks([i + 1 for i in range(len(changed))], [r["name"] for r in changed], rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    return _svg(fig)


def draw_sensitivity(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    """1 - fidelity with only that layer quantized, in graph order, coloured by the precision chosen (shared by the
    HTML report and ``onnxpress plot``)."""
    plt = pyplot()
    loss = [max(1.0 - float(r.get("score", 1.0)), 1e-9) for r in rows]
    ax.bar(range(len(rows)), loss, color=[LEVEL_COLORS.get(r.get("level", "full"), "#888") for r in rows])
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), [r.get("node", "?") for r in rows], rotation=90, fontsize=5 if len(rows) > 60 else 6)
    ax.set_ylabel("1 - fidelity, this layer alone")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in LEVEL_COLORS.values()]
    ax.legend(handles, ["quantized", "reduced", "kept float"], fontsize=7)


def layer_sensitivity(rows: Sequence[dict[str, Any]]) -> str | None:
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.13 * len(rows)), 14.0), 3.6))
    draw_sensitivity(ax, rows)
    fig.tight_layout()
    return _svg(fig)


def layer_values(layers: Sequence[dict[str, Any]], value_key: str, label: str, log: bool = False) -> str | None:
    """One bar per layer of a per-layer table from a lossy pass (pruning sparsity, low-rank error, ...)."""
    shown = [r for r in layers if isinstance(r.get(value_key), (int, float)) and not math.isnan(float(r[value_key]))]
    if not shown:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.13 * len(shown)), 14.0), 3.2))
    values = [max(float(r[value_key]), 1e-9) if log else float(r[value_key]) for r in shown]
    ax.bar(range(len(shown)), values, color="#2b7bba")
    if log:
        ax.set_yscale("log")
    ax.set_xticks(range(len(shown)), [str(r.get("layer") or r.get("node") or r.get("name") or "?") for r in shown],
                  rotation=90, fontsize=5 if len(shown) > 60 else 6)
    ax.set_ylabel(label)
    fig.tight_layout()
    return _svg(fig)


def pareto(points: Sequence[dict[str, Any]], x_key: str, x_label: str, front_ids: Sequence[str], log_x: bool = False) -> str | None:
    """One point per candidate at (``x``, 1 - fidelity), each a link to its recipe, the front drawn as a step line.

    Fidelity near 1 reads best as its distance to 1 on a log axis (lower is better, so the front runs along the
    lower left). ``points``: dicts with ``id``, ``label``, ``y`` (fidelity) and ``x_key``; the original model (``id``
    "original", distance 0) sits on the floor of the axis as a grey square."""
    shown = [p for p in points if isinstance(p.get(x_key), (int, float)) and isinstance(p.get("y"), (int, float))]
    if len(shown) < 2:
        return None
    plt = pyplot()
    gaps = [1.0 - float(p["y"]) for p in shown]
    # below 1e-6 a difference is float rounding: such points sit on the bottom edge, a decade under the rest
    floor = 10 ** math.floor(math.log10(min([g for g in gaps if g >= EXACT] or [EXACT]))) / 10
    ys = {p["id"]: max(g, floor) for p, g in zip(shown, gaps, strict=True)}
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    on_front = [p for p in shown if p["id"] in front_ids]
    for group, color, size in ((shown, OTHER_COLOR, 28), (on_front, FRONT_COLOR, 44)):
        group = [p for p in group if p["id"] != "original"]
        if group:
            dots = ax.scatter([p[x_key] for p in group], [ys[p["id"]] for p in group], s=size, color=color, zorder=3)
            dots.set_urls([f"#cand-{p['id']}" for p in group])  # a click on a point goes to its recipe
    original = [p for p in shown if p["id"] == "original"]
    if original:
        dots = ax.scatter([original[0][x_key]], [ys["original"]], s=50, marker="s", color=ORIGINAL_COLOR, zorder=3)
        dots.set_urls(["#cand-original"])
    line = sorted(on_front, key=lambda p: p[x_key])
    if len(line) > 1:
        ax.step([p[x_key] for p in line], [ys[p["id"]] for p in line], where="post", color=FRONT_COLOR, alpha=0.5, zorder=2)
    for p in shown:
        text = p["label"] if len(p["label"]) <= 30 else p["label"][:28] + "..."
        ax.annotate(text, (p[x_key], ys[p["id"]]), fontsize=6, xytext=(4, 3), textcoords="offset points")
    ax.set_yscale("log")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("1 - fidelity (log; lower is better)")
    ax.set_ylim(bottom=floor / 2)
    ax.axhline(floor, color="#bbb", lw=0.8, ls=":", zorder=1)
    ax.annotate(f"unchanged (< {EXACT:g})", (0.01, floor), xycoords=("axes fraction", "data"), ha="left", va="bottom",
                fontsize=6, color="#888")
    fig.tight_layout()
    return _svg(fig)
