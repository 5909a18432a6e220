"""tools/bench permutation: the channel-permutation search for N:M sparsity (``irpasses.sparsity.permutation``).

- apex's reference case: the 64x128 uniform random matrix of NVIDIA apex's ``permutation_test.py``
  (``--channels 64 --filters 128``, seed 1; in our [K, N] layout its transpose), 2:4, importance = |w|.
  apex's README: 36.6 % efficacy in 0.86 s on a V100 (best strategy), 32-35.5 % in 56-466 s on its CPU
  path. Efficacy is apex's: the share of the gap between 2:4 in the given order and unstructured 50 %
  pruning per output that the permutation closes. Median over ``search_seeds`` search seeds; the same
  generator's matrices for seeds 1-5 show how much the figure depends on the draw.
- real layers (``model_layers``): every layer 2:4 can take along its input channels in all-MiniLM-L6-v2 (its
  MatMuls) and PP-OCRv4 det and rec (Convs of one group, a few MatMuls in rec), after ``optimize``; importance
  |W| (magnitude) and |W| * ||x_c|| (Wanda; per-channel RMS of the layer's input over 16 calibration samples),
  and a control: |N(0, 1)| of the same shape. Reported per layer: importance kept without / with the
  permutation, the share of the pruned importance the permutation saves, efficacy, search seconds; and the
  mean per model and over all layers.

Each search gets ``budget_s`` seconds of wall time on whatever cores the machine has (numpy, one thread of
work; BLAS matrix-vector sums may use more).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

APEX_SEED = 1
RANDOM_SEEDS = (1, 2, 3, 4, 5)


def apex_matrix(seed: int = APEX_SEED) -> np.ndarray:
    """apex's ``np.random.seed(seed); np.random.rand(filters=128, channels=64)`` as importance [K=64, N=128]."""
    return np.random.RandomState(seed).rand(128, 64).T.copy()


def _row(case: str, kind: str, importance: str, shape: tuple[int, int], result: Any) -> dict[str, Any]:
    return {"case": case, "kind": kind, "importance": importance, "shape": list(shape), "kept_before": result.kept_before,
            "kept_after": result.kept_after, "total": result.total, "bound": result.bound, "efficacy": result.efficacy,
            "pruned_reduction": result.pruned_reduction, "seconds": result.seconds, "rounds": result.rounds}


def _median_row(case: str, kind: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for several searches of the same kind: medians, with the efficacy range."""
    out = {key: statistics.median(r[key] for r in rows) for key in ("kept_before", "kept_after", "total", "bound", "efficacy",
                                                                   "pruned_reduction", "seconds", "rounds")}
    return {"case": case, "kind": kind, "importance": rows[0]["importance"], "shape": rows[0]["shape"], **out,
            "efficacy_min": min(r["efficacy"] for r in rows), "efficacy_max": max(r["efficacy"] for r in rows), "runs": len(rows)}


def bench_apex(budget_s: float = 1.0, search_seeds: int = 5) -> list[dict[str, Any]]:
    """apex's matrix over ``search_seeds`` seeds, then the same generator's matrices 1-5 (3 seeds each)."""
    from onnxpress.irpasses.sparsity.permutation import search_permutation

    rows = []
    runs = [_row("apex 64x128", "apex", "magnitude", (64, 128), search_permutation(apex_matrix(), 4, 2, budget_s, seed))
            for seed in range(search_seeds)]
    rows.append(_median_row(f"apex 64x128, matrix seed {APEX_SEED}, {search_seeds} search seeds", "apex", runs))
    print(f"apex case: efficacy {rows[-1]['efficacy']:.1%} (median; {rows[-1]['efficacy_min']:.1%}..{rows[-1]['efficacy_max']:.1%}), "
          f"{rows[-1]['seconds']:.2f} s", flush=True)
    for matrix_seed in RANDOM_SEEDS:
        runs = [_row("random", "random", "magnitude", (64, 128), search_permutation(apex_matrix(matrix_seed), 4, 2, budget_s, seed))
                for seed in range(3)]
        rows.append(_median_row(f"random 64x128, matrix seed {matrix_seed}, 3 search seeds", "random", runs))
        print(f"  matrix seed {matrix_seed}: efficacy {rows[-1]['efficacy']:.1%}", flush=True)
    return rows


LAYER_MODELS = ("minilm", "det", "rec")
MIN_ELEMENTS = 4096
"""Layers smaller than prune's default ``min_elements`` stay dense there and are not searched here."""


def model_layers(name: str, samples: int = 16) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(node name, |W| as [channels, rest], sqrt(E[x_c^2]) of its input per channel)] for every layer of model
    ``name`` (``quant_suite._models``, after ``optimize``: BatchNorm folded as prune sees it) that 2:4 can take
    along its input channels: MatMuls with a 2-D constant weight, Convs of one group (kernel [O, C, *k] read as
    [C, O * prod(k)], prune's layout), C a multiple of 4, at least MIN_ELEMENTS weights."""
    import onnxpress
    from onnxpress.irpasses.clustering.cluster import MeanSquare
    from onnxpress.irpasses.quant.collect import stream_statistics
    from onnxpress.irpasses.sparsity.permute_channels import _ChannelMeanSquare, _conv_weight, _reader_matrix
    from onnxpress.tools.bench.quant_suite import _models

    source, calibration, _, _ = _models()[name]()
    model, _ = onnxpress.optimize(onnxpress.load(str(source)), "optimize", samples=calibration[:1], verify="off")
    layers = []
    for node in model.graph:
        weight = node.inputs[1].const_value if node.op_type in ("MatMul", "Conv") and len(node.inputs) > 1 and node.inputs[1] else None
        if weight is None or (len(weight.shape) != 2 if node.op_type == "MatMul" else _conv_weight(node) is None):
            continue
        matrix = _reader_matrix(node)
        if matrix.shape[0] % 4 == 0 and matrix.size >= MIN_ELEMENTS:
            layers.append((node, matrix))
    accumulators = {node.inputs[0].name: _ChannelMeanSquare() if node.op_type == "Conv" else MeanSquare() for node, _ in layers}
    stats = stream_statistics(model, calibration[:samples], accumulators, show_progress=False)
    return [(node.name, np.abs(matrix), np.sqrt(stats[node.inputs[0].name].value).astype(np.float32)) for node, matrix in layers]


def bench_layers(budget_s: float = 1.0, importances: tuple[str, ...] = ("magnitude", "wanda", "gaussian"), seed: int = 0,
                 models: tuple[str, ...] = LAYER_MODELS) -> list[dict[str, Any]]:
    """Every layer ``model_layers`` finds, 2:4, one search per layer and importance: magnitude |W|, Wanda
    |W| * ||x_c||, and a control, |N(0, 1)| draws of the same shape (what a layer without channel structure
    would give: the figure a search reaches on shape alone)."""
    from onnxpress.irpasses.sparsity.permutation import search_permutation

    rows = []
    rng = np.random.default_rng(seed)
    for model in models:
        layers = model_layers(model)
        for kind in importances:
            for name, magnitude, norm in layers:
                importance = {"magnitude": magnitude, "wanda": magnitude * norm[:, None],
                              "gaussian": np.abs(rng.standard_normal(magnitude.shape)).astype(np.float32)}[kind]
                result = search_permutation(importance, 4, 2, budget_s, seed)
                rows.append({**_row(name.removeprefix("/bert/encoder/").removesuffix("/MatMul"), "layer", kind, magnitude.shape, result),
                             "model": model})
                print(f"{model} {kind} {rows[-1]['case']} {magnitude.shape}: pruned importance -{result.pruned_reduction:.2%}, "
                      f"efficacy {result.efficacy:.1%}, {result.rounds} kicks, {result.seconds:.2f} s", flush=True)
            mine = [r for r in rows if r.get("model") == model and r["importance"] == kind]
            rows.append(_summary(f"{model}, {len(layers)} layers", kind, mine))
    for kind in importances:
        every = [r for r in rows if r["kind"] == "layer" and r["importance"] == kind]
        rows.append(_summary(f"all {len(every)} layers of {', '.join(models)}", kind, every))
    return rows


def _summary(case: str, kind: str, layer_rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"case": case, "kind": "summary", "importance": kind,
            "pruned_reduction": float(np.mean([r["pruned_reduction"] for r in layer_rows])),
            "efficacy": float(np.mean([r["efficacy"] for r in layer_rows])), "seconds": float(np.sum([r["seconds"] for r in layer_rows]))}


def bench_permutation(budget_s: float = 1.0, search_seeds: int = 5,
                      importances: tuple[str, ...] = ("magnitude", "wanda", "gaussian")) -> list[dict[str, Any]]:
    """apex's case and the real layers of MiniLM, PP-OCRv4 det and rec; see the module docstring."""
    start = time.perf_counter()
    rows = bench_apex(budget_s, search_seeds) + bench_layers(budget_s, importances)
    print(f"permutation bench: {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | 2:4 kept (given order) | kept (permuted) | unstructured bound | efficacy (apex) | seconds |",
             "|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["kind"] in ("apex", "random")):
        lines.append(f"| {r['case']} | {r['kept_before']:.3f} | {r['kept_after']:.3f} | {r['bound']:.3f} | "
                     f"{r['efficacy']:.1%} ({r['efficacy_min']:.1%}..{r['efficacy_max']:.1%}) | {r['seconds']:.2f} |")
    summaries = [r for r in rows if r["kind"] == "summary"]
    if summaries:  # the per-layer rows stay in the JSON
        lines += ["", "| real layers (mean per layer) | importance | pruned importance saved | efficacy (apex) | search seconds (total) |",
                  "|---|---|---|---|---|"]
        for r in summaries:
            lines.append(f"| {r['case']} | {r['importance']} | {r['pruned_reduction']:.2%} | {r['efficacy']:.1%} | {r['seconds']:.0f} |")
    return "\n".join(lines)
