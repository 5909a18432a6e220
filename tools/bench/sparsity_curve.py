"""tools/bench sparsity: the share of a model's prunable weights at 2:4 against its task metric, layer by layer.

The curve behind "the share of weights at 2:4 at retrieval >= 0.98": every layer is pruned once (channel
permutation, then SparseGPT 2:4 with statistics of the dense model, so a layer's pruned weight does not depend on
which others are pruned), then

- each layer alone at 2:4 is evaluated on the held-out samples (its damage to the task metric),
- layers are added least damaging first (ties: higher cosine first) and every prefix is evaluated.

The greedy order is what the fidelity search approximates with its single-layer ranking on a few calibration
samples; the curve shows, per model, the largest share a search of this kind can reach at a task bar, and why
a bar is out of reach (MiniLM: no single layer is free).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

CURVE_PIPELINE = "optimize,permute-channels{pattern=2:4}"
PRUNE = "prune{pattern=2:4,method=sparsegpt}"
BARS = {"minilm": (0.98, 0.95), "det": (0.97,), "rec": (0.99,)}
"""Task bars at which the markdown reads the curve (issue 15: retrieval 0.98 / 0.95, IoU 0.97; rec's 0.99
is issue 16's character bar, shown for comparison)."""


def share_curve(name: str) -> dict[str, Any]:
    """Per layer alone, then cumulative prefixes: weights at 2:4 (share of the prunable ones), task metric,
    cosine, on ``quant_suite._models()[name]``'s held-out samples."""
    import onnxpress
    from onnxpress.backends.ort.runner import make_session
    from onnxpress.tools.bench.quant_suite import _models

    start = time.perf_counter()
    source, calibration, held_out, metrics = _models()[name]()
    reference = make_session(onnxpress.load(str(source)), optimization="all", threads=1)
    expected = [reference.run(None, s)[0] for s in held_out]
    dense, _ = onnxpress.optimize(onnxpress.load(str(source)), CURVE_PIPELINE, samples=calibration, verify="off")
    pruned, _ = onnxpress.optimize(dense, PRUNE, samples=calibration, verify="off")  # optimize leaves ``dense`` as it was
    layers = _pruned_layers(dense, pruned)
    total = sum(weights for _, _, weights in layers.values())

    def evaluate(chosen: list[str]) -> dict[str, float]:
        originals = {}
        for node_name in chosen:
            value, tensor, _ = layers[node_name]
            originals[node_name] = value.const_value
            value.const_value = tensor
        try:
            session = make_session(dense, optimization="all", threads=2)
            got = [session.run(None, s)[0] for s in held_out]
        finally:
            for node_name, original in originals.items():
                layers[node_name][0].const_value = original
        share = sum(layers[n][2] for n in chosen) / total if total else 0.0
        return {"layers": len(chosen), "share": share, **{k: float(v) for k, v in metrics(expected, got).items()}}

    single = []
    for node_name in layers:
        single.append({"node": node_name, **evaluate([node_name])})
        print(f"{name} {node_name} alone at 2:4: task {single[-1]['task']:.4f}, cosine {single[-1]['cosine_mean']:.4f}", flush=True)
    order = [r["node"] for r in sorted(single, key=lambda r: (-r["task"], -r["cosine_mean"]))]
    curve = [{"added": None, **evaluate([])}]
    for k in range(1, len(order) + 1):
        curve.append({"added": order[k - 1], **evaluate(order[:k])})
        print(f"{name} {k} layers ({curve[-1]['share']:.1%} of the weights) at 2:4: task {curve[-1]['task']:.4f}", flush=True)
    return {"single": single, "curve": curve, "prunable_weights": total, "seconds": time.perf_counter() - start}


def _pruned_layers(dense: Any, pruned: Any) -> dict[str, tuple[Any, Any, int]]:
    """node name -> (the dense model's weight value, the pruned tensor, weights) for every layer prune changed."""
    by_name = {n.name: n for n in pruned.graph if n.name}
    layers = {}
    for node in dense.graph:
        other = by_name.get(node.name) if node.name else None
        if other is None or node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.inputs) < 2:
            continue
        value, tensor = node.inputs[1], other.inputs[1].const_value if other.inputs[1] is not None else None
        if value is None or value.const_value is None or tensor is None:
            continue
        if not np.array_equal(value.const_value.numpy(), tensor.numpy()):
            layers[node.name] = (value, tensor, int(tensor.size))
    return layers


def at_bar(result: dict[str, Any], bar: float) -> dict[str, Any]:
    """The largest prefix of the curve whose task metric is at least ``bar`` (the first point, 0 layers, else)."""
    best = result["curve"][0]
    for point in result["curve"]:
        if point["task"] >= bar and point["share"] >= best["share"]:
            best = point
    return best


def markdown(name: str, result: dict[str, Any]) -> list[str]:
    single = result["single"]
    best_single = max(single, key=lambda r: (r["task"], r["cosine_mean"])) if single else None
    lines = [f"\n{name}: share of the prunable weights at 2:4 against the task metric (greedy, least damaging layer first; "
             f"{len(single)} layers, {result['seconds']:.0f} s)\n", "| bar | layers at 2:4 | weights at 2:4 | task | cosine mean |",
             "|---|---|---|---|---|"]
    for bar in BARS.get(name, ()):
        point = at_bar(result, bar)
        lines.append(f"| task >= {bar} | {point['layers']} | {point['share']:.1%} | {point['task']:.4f} | {point['cosine_mean']:.4f} |")
    if best_single is not None:
        worst = min(single, key=lambda r: r["task"])
        lines.append(f"\nOne layer alone at 2:4: best {best_single['node']} task {best_single['task']:.4f}; worst {worst['node']} "
                     f"{worst['task']:.4f}; median {float(np.median([r['task'] for r in single])):.4f}.")
    return lines


def plot(results: dict[str, Any], path: Any) -> Any:
    """Task metric against the share of weights at 2:4, one line per model (``sparsity.png``)."""
    from onnxpress.tools.plot import plot_share_curves

    return plot_share_curves(results, path)
