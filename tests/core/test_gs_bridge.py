from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnx_ir as ir
import onnxpress
import pytest
from onnxpress.irpasses.analyses.dataflow_graph import DataflowGraph
from onnxpress.irpasses.core import PassContext, PassManager, PassOptionError
from onnxpress.irpasses.core.gs_bridge import graphsurgeon
from onnxpress.tools.cli import main
from onnxpress.tools.testing import assert_same_outputs, digest

X = {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}


def drop_identity(graph: gs.Graph) -> gs.Graph:
    """A typical user GraphSurgeon script: bypass Identity nodes, then clean up."""
    for node in [n for n in graph.nodes if n.op == "Identity"]:
        (src,), (dst,) = node.inputs, node.outputs
        for consumer in list(dst.outputs):
            consumer.inputs[consumer.inputs.index(dst)] = src
        node.outputs.clear()
    return graph.cleanup().toposort()


def test_graphsurgeon_function_runs_in_a_pipeline_with_weights_left_on_disk(mlp_external: Path) -> None:
    before = digest(mlp_external.parent)
    model = onnxpress.load(mlp_external)
    out, report = onnxpress.optimize(model, [graphsurgeon(drop_identity)], samples=[X])
    assert [n.op_type for n in out.graph] == ["MatMul", "Add", "Relu", "MatMul"]
    assert all(isinstance(v.const_value, ir.ExternalTensor) for v in out.graph.initializers.values())
    assert report.records[0].modified
    assert_same_outputs(onnx.load(mlp_external), out, X)
    assert digest(mlp_external.parent) == before


def test_graphsurgeon_script_from_the_cli(tmp_path: Path, mlp_file: Path, capsys) -> None:
    script = tmp_path / "fix.py"
    script.write_text(
        "def fix(graph):\n"
        "    for n in graph.nodes:\n"
        "        if n.op == 'Sigmoid':\n"
        "            n.outputs.clear()\n"
        "    graph.cleanup()\n"
    )
    code = main(["opt", str(mlp_file), "-o", str(tmp_path / "o.onnx"), "-p", f'graphsurgeon{{fn="{script}:fix"}}'])
    assert code == 0
    assert "Sigmoid" not in [n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node]


def test_graphsurgeon_bad_reference() -> None:
    from onnxpress.irpasses.core.gs_bridge import GraphSurgeonPass

    with pytest.raises(PassOptionError, match="expected 'module:function'"):
        PassManager([GraphSurgeonPass(fn="nocolon")]).run(onnxpress.load(onnxpress.tools.testing.mlp_proto()))


def test_dataflow_graph_analysis_is_cached(mlp_proto: onnx.ModelProto) -> None:
    model = onnxpress.load(mlp_proto)
    ctx = PassContext()
    dfg = ctx.analyses.get(DataflowGraph, model, ctx)
    assert ctx.analyses.get(DataflowGraph, model, ctx) is dfg
    names = {n.name for n in dfg.nodes}
    assert names == {"mm1", "add1", "relu1", "id1", "mm2", "dead1"}
    mm1 = next(n for n in dfg.nodes if n.name == "mm1")
    assert {n.name for n in dfg.successors(mm1)} == {"add1", "dead1"}
