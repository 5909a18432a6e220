"""tools/bench permutation: the channel-permutation search for N:M sparsity (``irpasses.sparsity.permutation``).

- apex's reference case: the 64x128 uniform random matrix of NVIDIA apex's ``permutation_test.py``
  (``--channels 64 --filters 128``, seed 1; in our [K, N] layout its transpose), 2:4, importance = |w|.
  apex's README: 36.6 % efficacy in 0.86 s on a V100 (best strategy), 32-35.5 % in 56-466 s on its CPU
  path. Efficacy is apex's: the share of the gap between 2:4 in the given order and unstructured 50 %
  pruning per output that the permutation closes. Median over ``search_seeds`` search seeds; the same
  generator's matrices for seeds 1-5 show how much the figure depends on the draw.
- real layers: every 2-D MatMul weight of all-MiniLM-L6-v2 (``real_models.minilm_onnx``), W [K, N], 2:4 along
  K, importance |W| (magnitude) and |W| * ||x_k|| (Wanda; per-channel RMS of the MatMul's input over 16 real
  sentences). Reported per layer: importance kept without / with the permutation, the share of the pruned
  importance the permutation saves, efficacy, search seconds.

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


def minilm_matmuls() -> tuple[Any, list[tuple[str, str, np.ndarray]]]:
    """(model, [(node name, input-0 name, W [K, N])]) for the MatMuls of MiniLM with a 2-D initializer weight."""
    import onnx
    from onnx import numpy_helper
    from onnxpress.tools import real_models as R

    model = onnx.load(str(R.minilm_onnx()))
    inits = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            weight = numpy_helper.to_array(inits[node.input[1]])
            if weight.ndim == 2:
                found.append((node.name, node.input[0], weight))
    return model, found


def activation_rms(model: Any, names: list[str], sentences: int = 16) -> dict[str, np.ndarray]:
    """Per-channel RMS of the named activations over real sentences (Wanda's ||x_k||, up to a constant)."""
    import onnx
    import onnxruntime as ort
    from onnxpress.tools import real_models as R

    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in model.graph.output}
    for name in dict.fromkeys(names):
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    squares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for sample in R.minilm_samples(R.sentences(sentences)):
        values = dict(zip(outputs, session.run(None, sample), strict=True))
        for name in set(names):
            x = values[name].reshape(-1, values[name].shape[-1]).astype(np.float64)
            squares[name] = squares.get(name, 0.0) + (x * x).sum(axis=0)
            counts[name] = counts.get(name, 0) + x.shape[0]
    return {name: np.sqrt(squares[name] / counts[name]) for name in squares}


def bench_layers(budget_s: float = 1.0, importances: tuple[str, ...] = ("magnitude", "wanda"), seed: int = 0) -> list[dict[str, Any]]:
    """Every 2-D MatMul weight of MiniLM, 2:4, one search per layer and importance kind."""
    from onnxpress.irpasses.sparsity.permutation import search_permutation

    model, matmuls = minilm_matmuls()
    rms = activation_rms(model, [x for _, x, _ in matmuls]) if "wanda" in importances else {}
    rows = []
    for kind in importances:
        for name, x, weight in matmuls:
            importance = np.abs(weight) if kind == "magnitude" else np.abs(weight) * rms[x][:, None].astype(np.float32)
            result = search_permutation(importance, 4, 2, budget_s, seed)
            rows.append(_row(name.removeprefix("/bert/encoder/").removesuffix("/MatMul"), "layer", kind, weight.shape, result))
            print(f"{kind} {rows[-1]['case']} {weight.shape}: pruned importance -{result.pruned_reduction:.2%}, "
                  f"efficacy {result.efficacy:.1%}, {result.rounds} kicks, {result.seconds:.2f} s", flush=True)
        layer_rows = [r for r in rows if r["importance"] == kind]
        rows.append({"case": f"MiniLM, {len(layer_rows)} layers", "kind": "summary", "importance": kind,
                     "pruned_reduction": float(np.mean([r["pruned_reduction"] for r in layer_rows])),
                     "efficacy": float(np.mean([r["efficacy"] for r in layer_rows])),
                     "seconds": float(np.sum([r["seconds"] for r in layer_rows]))})
    return rows


def bench_permutation(budget_s: float = 1.0, search_seeds: int = 5,
                      importances: tuple[str, ...] = ("magnitude", "wanda")) -> list[dict[str, Any]]:
    """apex's case and MiniLM's layers; see the module docstring."""
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
    layers = [r for r in rows if r["kind"] in ("layer", "summary")]
    if layers:
        lines += ["", "| MiniLM layer | importance | K x N | kept (given order) | kept (permuted) | pruned importance saved | efficacy "
                      "| kicks | seconds |", "|---|---|---|---|---|---|---|---|---|"]
        for r in layers:
            if r["kind"] == "summary":
                lines.append(f"| **{r['case']}, mean** | {r['importance']} | | | | **{r['pruned_reduction']:.2%}** | "
                             f"{r['efficacy']:.1%} | | {r['seconds']:.0f} (total) |")
            else:
                shape = "x".join(str(d) for d in r["shape"])
                lines.append(f"| {r['case']} | {r['importance']} | {shape} | {r['kept_before'] / r['total']:.2%} | "
                             f"{r['kept_after'] / r['total']:.2%} | {r['pruned_reduction']:.2%} | {r['efficacy']:.1%} | {r['rounds']} | "
                             f"{r['seconds']:.2f} |")
    return "\n".join(lines)
