"""One self-contained HTML page from ``opt --report`` JSON files or a sweep directory.

The page needs no network when viewed: plots are inline SVG (``figures``), styles inline, and the data behind
it sits in a JSON script element so the page can be read back by tools. Rendering goes through a Jinja2 template
with autoescaping: model-supplied names (nodes, outputs, recipes) cannot inject markup.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxpress.irpasses.core.errors import BackendUnavailableError, DataError
from onnxpress.tools.pareto import front
from onnxpress.tools.report_html import figures

LAYER_TABLES = {
    # kind in report.details -> (title, value column for the plot, its label, log scale)
    "pruning": ("Pruning per layer", "sparsity", "share of weights pruned", False),
    "lowrank": ("Low rank per layer", "relative_error", "relative output error", True),
    "permutation": ("Channel permutation per region", "gain", "importance kept, gain", False),
}


def _environment() -> Any:
    try:
        import jinja2
    except ImportError as err:
        raise BackendUnavailableError("the HTML report needs Jinja2", hint="pip install 'onnxpress[plot]'") from err
    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _markup(svg: str | None) -> Any:
    import markupsafe

    return markupsafe.Markup(svg) if svg else None  # matplotlib escapes the text it writes into the SVG


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else ("nan" if math.isnan(value) else format(value, spec))
    return str(value)


def _mb(n: Any) -> str:
    return f"{n / 1e6:.2f}" if isinstance(n, (int, float)) else ""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("onnxpress")
    except Exception:
        return "(source tree)"


def _pass_rows(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, str]], str]:
    """Passes that changed something or were skipped; those that changed nothing are folded into one line."""
    shown, idle = [], [r for r in records if not r.get("modified") and not r.get("skipped") and not r.get("inserted")]
    for r in records:
        if r in idle:
            continue
        notes = [f"skipped: {r['skipped']}"] if r.get("skipped") else []
        notes += [f"{k}={v}" for k, v in (r.get("stats") or {}).items() if v] + list(r.get("notes") or [])
        nodes = f"{r['nodes_before']} → {r['nodes_after']}" if r.get("modified") else str(r.get("nodes_after", ""))
        weights = _mb(r.get("weight_bytes_after")) + " MB"
        if r.get("weight_bytes_before") != r.get("weight_bytes_after"):
            weights = f"{_mb(r.get('weight_bytes_before'))} → {weights}"
        shown.append({"spec": r.get("spec", r.get("name", "?")), "ms": f"{r.get('seconds', 0) * 1e3:.1f}", "nodes": nodes,
                      "weights": weights, "rss": f"{r.get('rss_mib', 0):.0f}", "error": _fmt(r.get("max_abs_error"), ".3g"),
                      "notes": ", ".join(str(n) for n in notes)})
    folded = f"{len(idle)} more pass runs changed nothing ({sum(r.get('seconds', 0) for r in idle) * 1e3:.0f} ms)." if idle else ""
    return shown, folded


def _layer_tables(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-layer tables: quantization sensitivity, then each lossy pass's details, each with a plot."""
    tables = []
    quant = report.get("quantization") or {}
    if quant.get("sensitivity"):
        rows = quant["sensitivity"]
        tables.append({"title": "Per-layer sensitivity and the precision chosen", "name": "sensitivity",
                       "figure": _markup(figures.layer_sensitivity(rows)),
                       "caption": "1 - fidelity with only this layer quantized (log scale), in graph order; colour: the level chosen.",
                       "columns": ["layer", "op", "score", "reduced score", "level"],
                       "rows": [[r.get("node"), r.get("op_type"), _fmt(r.get("score"), ".6f"), _fmt(r.get("reduced_score"), ".6f"),
                                 r.get("level")] for r in rows]})
    for kind, info in (report.get("details") or {}).items():
        layers = info.get("layers") if isinstance(info, dict) else None
        if not isinstance(layers, list) or not layers or not all(isinstance(r, dict) for r in layers):
            continue
        title, key, label, log = LAYER_TABLES.get(kind, (f"{kind} per layer", "", kind, False))
        layers = [_with_derived(r) for r in layers]
        columns = [c for c in layers[0] if not isinstance(layers[0][c], (list, dict))]
        tables.append({"title": title, "name": kind, "figure": _markup(figures.layer_values(layers, key, label, log)) if key else None,
                       "caption": f"{label} per layer.", "columns": columns,
                       "rows": [[_fmt(r.get(c)) for c in columns] for r in layers]})
    return tables


def _with_derived(row: dict[str, Any]) -> dict[str, Any]:
    """Pruning records count zeros and weights; the plot wants their share."""
    if "sparsity" not in row and isinstance(row.get("zeros"), (int, float)) and row.get("weights"):
        return {**row, "sparsity": row["zeros"] / row["weights"]}
    return row


def _quant_lines(report: dict[str, Any]) -> list[str]:
    from onnxpress.irpasses.core.manager import PipelineReport

    fields = {k: report.get(k) for k in ("pipeline", "quantization")}
    return PipelineReport(**fields).quantization_lines() if fields["pipeline"] is not None else []  # type: ignore[arg-type]


def model_section(payload: dict[str, Any], section_id: str, label: str, recipe: str = "", open_: bool = True) -> dict[str, Any]:
    """The parts of the page for one ``opt --report`` payload (input/output summaries and the pass report)."""
    report = payload.get("report", payload)
    before, after = payload.get("before") or {}, payload.get("after") or {}
    passes, folded = _pass_rows(report.get("records") or [])
    figs = []
    if svg := figures.pass_profile(report.get("records") or []):
        figs.append({"name": "passes", "svg": _markup(svg),
                     "caption": "Nodes and weight bytes after each pass that changed the model (top), and its time (bottom)."})
    if svg := figures.op_histogram(before.get("ops") or {}, after.get("ops") or {}):
        figs.append({"name": "ops", "svg": _markup(svg), "caption": "Op histogram before and after (most common ops)."})
    cards = []
    if before and after:
        cards = [{"value": f"{before.get('nodes')} → {after.get('nodes')}", "label": "nodes"},
                 {"value": f"{_mb(before.get('weight_bytes'))} → {_mb(after.get('weight_bytes'))} MB", "label": "weights"}]
    if report.get("seconds") is not None:
        cards += [{"value": f"{report['seconds']:.1f} s", "label": "pipeline time"},
                  {"value": f"{report.get('peak_rss_mib', 0):.0f} MiB", "label": "peak memory (RSS)"}]
    numerics = [{**e, "max_abs": _fmt(e.get("max_abs"), ".3g"), "max_rel": _fmt(e.get("max_rel"), ".3g"),
                 "cosine": _fmt(e.get("cosine"), ".6f"), "verdict": "within tolerance" if e.get("within") else "beyond tolerance"}
                for e in report.get("numerics") or []]
    quant = _quant_lines(report)
    if payload.get("import"):
        cards.insert(0, {"value": str(payload["import"].get("source.frontend", "?")), "label": "imported from"})
    return {"id": section_id, "label": label, "recipe": recipe or report.get("pipeline", ""), "body": True, "open": open_,
            "cards": cards, "passes": passes, "folded": folded, "figures": figs, "numerics": numerics,
            "numerics_note": report.get("numerics_note", ""), "layer_tables": _layer_tables(report),
            "imported": sorted((payload.get("import") or {}).items()),
            "quant_head": [line for line in quant if line.startswith("fidelity")],
            "quant_kept": [line for line in quant if not line.startswith("fidelity")]}


def _render(title: str, subtitle: str, models: list[dict[str, Any]], sweep: dict[str, Any] | None, data: Any) -> str:
    return _environment().get_template("page.html.j2").render(title=title, subtitle=subtitle, models=models, sweep=sweep,
                                                               data=data, version=_version())


def _fidelity_of(payload: dict[str, Any]) -> float | None:
    numerics = (payload.get("report", payload).get("numerics")) or []
    cosines = [e.get("cosine") for e in numerics if isinstance(e.get("cosine"), (int, float))]
    return min(cosines) if cosines else None


def payload_page(payload: dict[str, Any]) -> str:
    """The page for one report not yet written to a file (``opt --report out.html``)."""
    section = model_section(payload, "0", Path(str(payload.get("output", ""))).name)
    return _render(f"onnxpress report: {Path(str(payload.get('input', ''))).name}",
                   f"{payload.get('input', '')} → {payload.get('output', '')}", [section], None, payload)


def reports_page(paths: Sequence[str | Path]) -> str:
    """A page for one or more ``opt --report`` JSON files; with several, a size-fidelity plot across them."""
    payloads = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable JSON report ({err})",
                            hint="give files written by onnxpress opt --report R.json") from err
        if not isinstance(payload, dict) or "report" not in payload and "records" not in payload:
            raise DataError(f"{path}: not an onnxpress opt report (no 'report' or 'records')",
                            hint="for a sweep, open DIR/report.html, or pass DIR/results.json")
        payloads.append(payload)
    if len(payloads) == 1:
        return payload_page(payloads[0])
    models = [model_section(p, str(i), f"{Path(str(p.get('output') or path)).name}", open_=False)
              for i, (p, path) in enumerate(zip(payloads, paths, strict=True))]
    points = [{"id": str(i), "label": m["label"], "bytes": (p.get("after") or {}).get("weight_bytes"), "y": _fidelity_of(p)}
              for i, (p, m) in enumerate(zip(payloads, models, strict=True))]
    ok = [p for p in points if p["bytes"] is not None and p["y"] is not None]
    ids = [p["id"] for p in front(ok, [(lambda p: p["bytes"], False), (lambda p: p["y"], True)])]
    svg = figures.pareto(ok, "bytes", "weight bytes (fidelity: lowest output cosine of the numeric check)", ids)
    sweep = {"cards": [{"value": str(len(payloads)), "label": "reports"}, {"value": str(len(ids)), "label": "on the front"}],
             "samples": "the numeric check's", "latency_note": "not measured by opt (use onnxpress sweep)",
             "metric": "min cosine", "metric_note": "the lowest cosine similarity of any output to the original's",
             "figures": [{"name": "pareto-size", "svg": _markup(svg), "caption": "Weight bytes vs fidelity."}] if svg else [],
             "rows": [{"id": p["id"], "label": p["label"], "status": "ok", "mb": _mb(p["bytes"]), "ratio": "",
                       "cosine": _fmt(p["y"], ".5f"), "latency": "", "speed": "", "transform": "", "front": p["id"] in ids}
                      for p in points]}
    return _render(f"onnxpress report ({len(payloads)} runs)", "Several opt runs side by side.", models, sweep, payloads)


def sweep_page(root: str | Path, results: dict[str, Any], measurements: dict[str, dict[str, Any]], latency_note: str) -> str:
    """The sweep's page: cards, the size-latency-fidelity plots with the fronts, the candidate table, and one
    section per candidate built from its pass report."""
    root = Path(root)
    original = results.get("original") or {}
    base_bytes = original.get("bytes")
    front_ids = set(results.get("pareto_size_fidelity") or [])
    points, rows, models = [], [], []
    for r in ([original] if original else []) + list(results.get("candidates") or []):
        m = measurements.get(r["id"], {})
        lat = (m.get("latency") or {})
        ok = r.get("status") == "ok"
        point = {"id": r["id"], "label": r["label"], "bytes": r.get("bytes"), "latency": lat.get("median_ms"),
                 "y": (r.get("fidelity") or {}).get("score") if ok else None}
        points.append(point)
        rows.append({"id": r["id"], "label": r["label"], "status": r.get("status", "?"), "mb": _mb(r.get("bytes")),
                     "ratio": _fmt(base_bytes / r["bytes"], ".2f") if ok and base_bytes and r.get("bytes") else "",
                     "cosine": _fmt(point["y"], ".5f"), "latency": _fmt(lat.get("median_ms"), ".2f"),
                     "speed": _fmt(lat.get("vs_original"), ".2f"), "transform": _fmt(m.get("transform_s"), ".1f"),
                     "front": r["id"] in front_ids})
        if r["id"] == "original":
            models.append({"id": "original", "label": "original model", "recipe": "", "body": False,
                           "cards": [{"value": f"{_mb(r.get('bytes'))} MB", "label": "file"}]})
            continue
        payload = _read_json(root / "candidates" / r["id"] / "report.json")
        section = model_section(payload, r["id"], r["label"], r.get("recipe", ""), open_=False) if payload and ok else \
            {"id": r["id"], "label": r["label"], "recipe": r.get("recipe", ""), "body": False, "cards": []}
        if not ok:
            section["error"] = f"{r.get('status')}: {r.get('error', '')} {r.get('hint', '')}".strip()
        models.append(section)
    ok_points = [p for p in points if p["y"] is not None]
    with_latency = [p for p in ok_points if p["latency"] is not None]
    latency_front = {p["id"] for p in front(with_latency, [(lambda p: p["latency"], False), (lambda p: p["y"], True)])}
    figs = []
    if svg := figures.pareto(ok_points, "bytes", "file size (bytes, log)", sorted(front_ids), log_x=True):
        figs.append({"name": "pareto-size", "svg": _markup(svg), "caption": "Size vs fidelity; red: the Pareto front."})
    if svg := figures.pareto(with_latency, "latency", "latency (ms, median)", sorted(latency_front)):
        figs.append({"name": "pareto-latency", "svg": _markup(svg), "caption": "Latency vs fidelity; red: the Pareto front on these two."})
    if results.get("per_layer"):
        layers = [{"layer": r["layer"], "recovered": r["recovered"]} for r in results["per_layer"] if r["recovered"] is not None]
        if svg := figures.layer_values(layers, "recovered", "fidelity recovered by keeping it out", log=False):
            figs.insert(0, {"name": "per-layer", "svg": _markup(svg), "caption": "Per-layer sensitivity, leave-one-out: the "
                            "lowest output cosine with only that layer kept out of the pipeline, minus the whole pipeline's."})
    done = [r for r in results.get("candidates") or [] if r.get("status") == "ok"]
    cards = [{"value": str(len(results.get("candidates") or [])), "label": "candidates"},
             {"value": str(len(done)), "label": "finished"},
             {"value": str(len(front_ids - {"original"})), "label": "on the size-fidelity front"}]
    if done and base_bytes:
        best = max(done, key=lambda r: base_bytes / r["bytes"])
        cards.append({"value": f"{base_bytes / best['bytes']:.2f}x", "label": f"smallest: {best['label']}"})
    metric = (results.get("sweep") or {}).get("metric", "cosine")
    notes = {"cosine": "the lowest cosine similarity of any output to the original's",
             "top1": "the share of rows whose argmax (first output, last axis) agrees with the original's"}
    sweep = {"cards": cards, "samples": original.get("fidelity", {}).get("samples", "?"), "latency_note": latency_note,
             "metric": "min cosine" if metric == "cosine" else metric, "metric_note": notes.get(metric, f"the score {metric} returns"),
             "figures": figs, "rows": rows}
    ident = results.get("sweep") or {}
    subtitle = f"model {ident.get('model', '?')} (sha256 {str(ident.get('model_sha256', ''))[:12]}), seed {ident.get('seed')}"
    return _render(f"onnxpress sweep: {ident.get('model', '')}", subtitle, models, sweep,
                   {"results": results, "measurements": measurements})


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
