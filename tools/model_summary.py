"""What a model holds: op histogram, parameters and bytes by dtype and by consuming op, signature, versions."""

from __future__ import annotations

import collections
from typing import Any

import onnx_ir as ir
from onnxpress.irpasses.core.manager import count_nodes


def _tensor_of_constant(node: ir.Node) -> ir.TensorProtocol | None:
    attr = node.attributes.get("value")
    return attr.value if attr is not None and attr.type == ir.AttributeType.TENSOR else None


def summarize(model: ir.Model) -> dict[str, Any]:
    ops: collections.Counter[str] = collections.Counter()
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        ops[f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
    by_dtype: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"tensors": 0, "params": 0, "bytes": 0})
    by_op: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"params": 0, "bytes": 0})
    weights: list[tuple[ir.Value, ir.TensorProtocol]] = [
        (v, v.const_value) for v in model.graph.initializers.values() if v.const_value is not None
    ]
    weights += [(n.outputs[0], t) for n in model.graph if n.op_type == "Constant" and (t := _tensor_of_constant(n)) is not None]
    for value, tensor in weights:
        entry = by_dtype[str(tensor.dtype)]
        entry["tensors"] += 1
        entry["params"] += tensor.size
        entry["bytes"] += tensor.nbytes
        consumers = sorted({use.node.op_type for use in value.uses()}) or ["(graph output or unused)"]
        op_entry = by_op["/".join(consumers)]
        op_entry["params"] += tensor.size
        op_entry["bytes"] += tensor.nbytes

    def sig(values: Any) -> list[dict[str, Any]]:
        return [
            {"name": v.name, "dtype": str(v.dtype) if v.dtype is not None else None, "shape": [str(d) if not isinstance(d, int) else d for d in v.shape] if v.shape is not None else None}
            for v in values
        ]

    return {
        "ir_version": model.ir_version,
        "opsets": dict(model.opset_imports),
        "producer": f"{model.producer_name or ''} {model.producer_version or ''}".strip(),
        "nodes": count_nodes(model.graph),
        "ops": dict(ops.most_common()),
        "params": sum(t.size for _, t in weights),
        "weight_bytes": sum(t.nbytes for _, t in weights),
        "weights_by_dtype": dict(by_dtype),
        "weights_by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1]["bytes"])),
        "needs": _needs(ops),
        "inputs": sig(v for v in model.graph.inputs if v.name not in model.graph.initializers),
        "outputs": sig(model.graph.outputs),
    }


def _needs(ops: collections.Counter[str]) -> list[str]:
    """What a runtime must have registered beyond its own ops (onnxruntime fails with 'onnxpress:SparseMatMul(-1)
    is not a registered function/op' otherwise)."""
    from onnxpress.kernels import DOMAIN

    ours = sorted(op.split("::", 1)[1] for op in ops if op.startswith(f"{DOMAIN}::"))
    if not ours:
        return []
    return [f"onnxpress kernels for {', '.join(ours)}: onnxruntime needs "
            "SessionOptions.register_custom_ops_library(onnxpress.kernels.library_path()) "
            "(onnxpress's ORT backend registers it itself)"]


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"IR {s['ir_version']}, opsets {s['opsets']}, producer '{s['producer']}'",
        f"{s['nodes']} nodes, {s['params']:,} parameters, {s['weight_bytes'] / 1e6:.2f} MB of weights",
        "inputs:  " + "; ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in s["inputs"]),
        "outputs: " + "; ".join(f"{o['name']} {o['dtype']} {o['shape']}" for o in s["outputs"]),
        "ops:     " + ", ".join(f"{k} {v}" for k, v in s["ops"].items()),
        "weights by dtype: " + "; ".join(f"{k}: {v['tensors']} tensors, {v['params']:,} params, {v['bytes'] / 1e6:.2f} MB" for k, v in s["weights_by_dtype"].items()),
        "weights by consuming op: " + "; ".join(f"{k}: {v['params']:,} params, {v['bytes'] / 1e6:.2f} MB" for k, v in list(s["weights_by_op"].items())[:8]),
    ]
    lines += [f"needs:   {need}" for need in s.get("needs", [])]
    return "\n".join(lines)
