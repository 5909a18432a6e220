"""Op schemas at a model's opset: which form of an op a model may hold.

Rewrite rules and constant-folding evaluators from onnxscript build nodes in their newest form (Unsqueeze and
Split with an ``axes``/``split`` input, Gemm without C, Reshape with a shape input, Constant with
``value_int``) whatever the model's opset. ``form_problem`` says why such a node is not valid at the model's
opset, so a pass can decline the rewrite instead of writing a model every runtime refuses; the loader uses
``schema`` to check the attributes and outputs of the nodes it reads.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import onnx
import onnx_ir as ir

_DEFAULT_DOMAINS = ("", "ai.onnx")


def domain_version(opsets: Mapping[str, int], domain: str) -> int | None:
    """The version ``opsets`` imports for ``domain`` ("" and "ai.onnx" are one domain)."""
    if domain in _DEFAULT_DOMAINS:
        for name in _DEFAULT_DOMAINS:
            if name in opsets:
                return int(opsets[name])
        return None
    version = opsets.get(domain)
    return None if version is None else int(version)


@functools.lru_cache(maxsize=4096)
def schema(op_type: str, domain: str, version: int) -> onnx.defs.OpSchema | None:
    """The schema ``op_type`` has at opset ``version`` of ``domain``; None when ONNX does not know the op there
    (a custom domain, or an op newer than the opset)."""
    domain = "" if domain in _DEFAULT_DOMAINS else domain
    if not onnx.defs.has(op_type, domain):
        return None
    try:
        return onnx.defs.get_schema(op_type, max_inclusive_version=version, domain=domain)
    except onnx.defs.SchemaError:
        return None


def form_problem(node: ir.Node, opsets: Mapping[str, int]) -> str | None:
    """Why ``node`` is not a valid form of its op at the opsets a model imports, or None. Ops of domains ONNX
    has no schemas for are not judged."""
    domain = "" if node.domain in _DEFAULT_DOMAINS else node.domain
    version = domain_version(opsets, domain)
    if version is None or domain not in ("", "ai.onnx.ml", "ai.onnx.preview.training"):
        return None  # a domain the model does not import yet gets its import with the rewrite
    label = f"{node.op_type}" if not domain else f"{domain}.{node.op_type}"
    found = schema(node.op_type, domain, version)
    if found is None or found.deprecated:
        return f"{label} does not exist at opset {version}"
    inputs = len(node.inputs)
    while inputs and node.inputs[inputs - 1] is None:
        inputs -= 1  # trailing optional inputs left out
    if not found.min_input <= inputs <= found.max_input:
        return f"{label}-{found.since_version} (opset {version}) takes {found.min_input} to {found.max_input} inputs, not {inputs}"
    unknown = sorted(set(node.attributes) - set(found.attributes))
    if unknown:
        return f"{label}-{found.since_version} (opset {version}) has no attribute {', '.join(repr(a) for a in unknown)}"
    return None


def nodes_problem(nodes: list[ir.Node] | tuple[ir.Node, ...], opsets: Mapping[str, int]) -> str | None:
    """The first ``form_problem`` among ``nodes`` (what a rewrite is about to insert), or None."""
    for node in nodes:
        problem = form_problem(node, opsets)
        if problem is not None:
            return problem
    return None
