"""The measured cost model of ``lowrank``: is a layer's factorized form faster than the layer on onnxruntime CPU?

Fewer multiply-adds do not always run faster: two thin GEMMs pay twice the memory traffic and call overhead, and
a k x 1 then 1 x k pair re-reads its input. Each layer is timed alone (ORT_ENABLE_ALL, one thread, medians,
``layer_timing.median_ms``) whole and at a few of its candidate forms; the answers are cached on disk per CPU,
onnxruntime version, layer shape and form, so a second run (the fidelity search, a benchmark) times nothing.
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

FASTER = 0.93
"""A factorized form must take at most this share of the whole layer's time: closer than 7 % is noise."""

Timer = Callable[[ir.Model, Sequence[int]], float]


@functools.cache
def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_path() -> Path:
    from onnxpress.backends.base import cache_dir

    return cache_dir() / "lowrank-timing.json"


class TimingCache:
    """Milliseconds per (machine, layer, form) key, read once and written back after new measurements."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or _cache_path()
        try:
            self.entries: dict[str, float] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def get(self, key: str, measure: Callable[[], float]) -> float:
        if key not in self.entries:
            self.entries[key] = measure()
            self.dirty = True
        return self.entries[key]

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.entries, indent=0, sort_keys=True))
        except OSError:
            pass  # a read-only cache only costs the measurements again
        self.dirty = False


def measured_timer(model: ir.Model, input_shape: Sequence[int]) -> float:
    from onnxpress.irpasses.quant.layer_timing import median_ms

    return median_ms(model, input_shape, budget_s=0.05, rounds=7)


def layer_key(node: ir.Node, input_shape: Sequence[int], form: str) -> str:
    import onnxruntime

    weight = tuple(node.inputs[1].const_value.shape)
    attributes = sorted((k, str(a.value)) for k, a in node.attributes.items())
    return f"{_cpu()}|ort {onnxruntime.__version__}|{node.op_type}{weight}{attributes}|x{tuple(input_shape)}|{form}"


def one_layer(node: ir.Node, input_shape: Sequence[int]) -> tuple[ir.Model, ir.Node]:
    """``node`` (with its constant weight and bias) as a model of its own, input x, output y; and its copy."""
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(list(input_shape)))
    initializers = []
    inputs: list[ir.Value | None] = [x]
    for index, value in enumerate(node.inputs[1:], start=1):
        if value is None or value.const_value is None:
            inputs.append(None)
            continue
        array = value.const_value.numpy().astype(np.float32)
        constant = ir.Value(name=f"c{index}", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(array.shape),
                            const_value=ir.tensor(array, name=f"c{index}"))
        initializers.append(constant)
        inputs.append(constant)
    copy = ir.Node("", node.op_type, inputs, attributes=[_copy_attribute(a) for a in node.attributes.values()], num_outputs=1,
                   name="layer")
    copy.outputs[0].name = "y"
    copy.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph([x], [copy.outputs[0]], nodes=[copy], initializers=initializers, opset_imports={"": 17}, name="layer")
    return ir.Model(graph, ir_version=8), copy


def _copy_attribute(attribute: ir.Attr) -> ir.Attr:
    value = attribute.value
    return ir.Attr(attribute.name, attribute.type, list(value) if isinstance(value, (list, tuple)) else value)


def faster_choices(found: Any, input_shape: Sequence[int], measure: str, timer: Timer, cache: TimingCache | None) -> list:
    """The layer's choices costing no more than the dearest hull vertex timed faster than the whole layer (times
    fall as the cost falls, so a bisection over the hull's vertices finds it in a few timings); [] if none."""
    from onnxpress.irpasses.lowrank.factor import hull

    node = found.layer.node
    choices = found.curve.choices

    def time(choice: Any) -> float:
        model, copy = one_layer(node, input_shape)
        if choice is not None:
            found.rewrite(copy, choice)
        form = "whole" if choice is None else f"{choice.kind}{choice.ranks}"
        measure_once = lambda: timer(model, input_shape)  # noqa: E731
        return cache.get(layer_key(node, input_shape, form), measure_once) if cache is not None else measure_once()

    vertices = [choices[i] for _, _, i in hull(found.curve, measure)[1:]]  # least saving first
    if not vertices:
        return []
    whole = time(None)
    low, high = 0, len(vertices)  # the answer: the first index timed faster (len: none)
    if time(vertices[-1]) > FASTER * whole:
        return []
    high = len(vertices) - 1
    while low < high:
        middle = (low + high) // 2
        if time(vertices[middle]) <= FASTER * whole:
            high = middle
        else:
            low = middle + 1
    bound = vertices[high].cost(measure)
    return [c for c in choices if c.cost(measure) <= bound]
