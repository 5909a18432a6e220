"""Generate a large model with external data without holding its weights in memory.

Default: 4,096 blocks of MatMul -> Add -> Relu (hidden 272) plus 410 dead Sigmoid branches = 12,698 nodes and
1.22 GB of float32 weights in one external-data file (the shape used in shared/design/architecture-notes.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


def _external(name: str, shape: tuple[int, ...], location: str, offset: int) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
    tensor.data_location = TensorProto.EXTERNAL
    length = int(np.prod(shape)) * 4
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def generate(path: Path, blocks: int = 4096, hidden: int = 272, dead_every: int = 10, seed: int = 0) -> dict[str, int]:
    """Write ``path`` and ``path.name + '.data'``; returns node count and weight bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    location = path.name + ".data"
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    offset = 0
    x = "x"
    with open(path.parent / location, "wb") as data:
        for i in range(blocks):
            w = (rng.standard_normal((hidden, hidden), dtype=np.float32) * (1.0 / np.sqrt(hidden))).astype(np.float32)
            b = rng.standard_normal(hidden, dtype=np.float32) * 0.01
            for name, array in ((f"w{i}", w), (f"b{i}", b)):
                inits.append(_external(name, array.shape, location, offset))
                data.write(array.tobytes())
                offset += array.nbytes
            nodes += [
                helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"], name=f"mm{i}"),
                helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"], name=f"add{i}"),
                helper.make_node("Relu", [f"add{i}"], [f"relu{i}"], name=f"relu{i}"),
            ]
            if i % dead_every == 0:
                nodes.append(helper.make_node("Sigmoid", [f"add{i}"], [f"dead{i}"], name=f"dead{i}"))
            x = f"relu{i}"
    graph = helper.make_graph(
        nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, hidden])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, hidden])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, path)
    return {"nodes": len(nodes), "weight_bytes": offset}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--blocks", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=272)
    args = parser.parse_args()
    print(generate(args.output, args.blocks, args.hidden))
