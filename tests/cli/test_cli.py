from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxpress.irpasses.core.registry import reset_default_registry
from onnxpress.tools.cli import main
from onnxpress.tools.testing import digest


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_opt_writes_output_report_and_keeps_input(capsys, mlp_external: Path, mlp_samples: Path, tmp_path: Path) -> None:
    before = digest(mlp_external.parent)
    out, report = tmp_path / "o" / "mlp.opt.onnx", tmp_path / "r.json"
    code, stdout, _ = run_cli(capsys, "opt", mlp_external, "-o", out, "-p", "cleanup", "--inputs", mlp_samples, "--report", report, "--verify-each")
    assert code == 0
    assert "remove-identity" in stdout and "6 nodes" in stdout and "4 nodes" in stdout
    data = json.loads(report.read_text())
    assert data["before"]["nodes"] == 6 and data["after"]["nodes"] == 4
    assert all(e["within"] for e in data["report"]["numerics"])
    assert digest(mlp_external.parent) == before
    assert len(onnx.load(out).graph.node) == 4


def test_passes_json_lists_builtin_and_plugin_passes(capsys) -> None:
    code, out, _ = run_cli(capsys, "passes", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["dead-code"]["origin"] == "onnxpress" and rows["cleanup"]["kind"] == "pipeline"
    assert rows["fold-double-relu"]["origin"] == "onnxpress-example-plugin", "tests need tests/plugins/example_plugin installed (tools/dev does it)"


def test_plugin_pass_runs_in_a_pipeline(capsys, tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r1"), helper.make_node("Relu", ["a"], ["b"], name="r2"), helper.make_node("Neg", ["b"], ["y"], name="n")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    src = tmp_path / "relu.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    code, out, _ = run_cli(capsys, "opt", src, "-o", tmp_path / "o.onnx", "-p", "example-cleanup")
    assert code == 0 and "fold-double-relu" in out and "folded=1" in out
    assert [n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node] == ["Relu", "Neg"]


def test_inspect(capsys, mlp_file: Path) -> None:
    code, out, _ = run_cli(capsys, "inspect", mlp_file, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["nodes"] == 6 and summary["ops"]["MatMul"] == 2
    assert summary["params"] == 8 * 16 + 16 + 16 * 4
    assert summary["weights_by_dtype"]["FLOAT"]["bytes"] == 4 * summary["params"]
    assert summary["inputs"] == [{"name": "x", "dtype": "FLOAT", "shape": ["batch", 8]}]


def test_compare(capsys, mlp_file: Path, mlp_samples: Path, tmp_path: Path) -> None:
    proto = onnx.load(mlp_file)
    proto.graph.initializer[2].raw_data = (np.frombuffer(proto.graph.initializer[2].raw_data, np.float32) * 1.01).tobytes()
    changed = tmp_path / "changed.onnx"
    onnx.save_model(proto, changed)
    code, out, _ = run_cli(capsys, "compare", mlp_file, mlp_file, "--inputs", mlp_samples, "--json")
    assert code == 0 and json.loads(out)["outputs"][0]["max_abs"] == 0
    code, out, _ = run_cli(capsys, "compare", mlp_file, changed, "--inputs", mlp_samples)
    assert code == 3 and "BEYOND" in out and "cosine 1.0000" in out


def _bad_calibration(tmp_path: Path) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, pixels=np.zeros((2, 1, 8), np.float32))
    return path


BAD_INPUTS = {
    "truncated": lambda d, m: (m.write_bytes(m.read_bytes()[:200]), ["opt", m, "-o", d / "o.onnx"])[1],
    "not onnx": lambda d, m: (m.write_text("name,value\n1,2\n"), ["opt", m, "-o", d / "o.onnx"])[1],
    "cycle": lambda d, m: (_write_cycle(m), ["opt", m, "-o", d / "o.onnx"])[1],
    "missing external data": lambda d, m: (_external(m), (m.parent / "mlp.onnx.data").unlink(), ["opt", m, "-o", d / "o.onnx"])[2],
    "escaping external data": lambda d, m: (_external(m, "../../escape.bin"), ["opt", m, "-o", d / "o.onnx"])[1],
    "unknown pass": lambda d, m: ["opt", m, "-o", d / "o.onnx", "-p", "cleanup,fold-everything"],
    "bad pass option": lambda d, m: ["opt", m, "-o", d / "o.onnx", "-p", "dedup-initializers{max_bytes=lots}"],
    "calibration names": lambda d, m: ["opt", m, "-o", d / "o.onnx", "--calib", _bad_calibration(d)],
    "overwrite input": lambda d, m: ["opt", m, "-o", m],
}
EXPECTED = {
    "truncated": "is not a readable ONNX model",
    "not onnx": "is not a readable ONNX model",
    "cycle": "has a cycle",
    "missing external data": "external-data file 'mlp.onnx.data' is missing",
    "escaping external data": "escapes the model's folder",
    "unknown pass": "unknown pass 'fold-everything'",
    "bad pass option": "option 'max_bytes' of pass 'dedup-initializers': expected int, got 'lots'",
    "calibration names": "input names do not match the model (missing x; unknown pixels)",
    "overwrite input": "refusing to write",
}


def _write_cycle(path: Path) -> None:
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second")]
    graph = helper.make_graph(nodes, "cyc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _external(path: Path, location: str | None = None) -> None:
    proto = onnx.load(path)
    onnx.save_model(proto, path, save_as_external_data=True, location="mlp.onnx.data", size_threshold=0)
    if location:
        proto = onnx.load(path, load_external_data=False)
        for e in proto.graph.initializer[0].external_data:
            if e.key == "location":
                e.value = location
        onnx.save_model(proto, path)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_clear_line_and_exit_2(capsys, tmp_path: Path, mlp_file: Path, case: str) -> None:
    argv = BAD_INPUTS[case](tmp_path, mlp_file)
    before = digest(mlp_file.parent)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and EXPECTED[case] in lines[0], err
    assert all(line.startswith(("error: ", "hint: ", "warning: ", "  ")) for line in lines), err
    assert "Traceback" not in err
    assert digest(mlp_file.parent) == before
    assert not (tmp_path / "o.onnx").exists()


def test_real_process_exit_code_and_no_traceback(tmp_path: Path) -> None:
    bogus = tmp_path / "x.onnx"
    bogus.write_text("not a model")
    proc = subprocess.run([sys.executable, "-m", "onnxpress.tools.cli", "opt", str(bogus), "-o", str(tmp_path / "o.onnx")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_duplicate_pass_name_is_refused_naming_both_packages(tmp_path: Path, capsys) -> None:
    """A second distribution registering 'dead-code' through its entry point is refused clearly."""
    site = tmp_path / "site"
    (site / "dup_vendor").mkdir(parents=True)
    (site / "dup_vendor" / "__init__.py").write_text(textwrap.dedent("""
        from onnxpress.irpasses.core import API_VERSION, Plugin
        PLUGIN = Plugin(api_version=API_VERSION, passes={"dead-code": "dup_vendor:Nothing"})
    """))
    info = site / "dup_vendor-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dup-vendor\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[onnxpress.passes]\ndup = dup_vendor:PLUGIN\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "onnxpress.tools.cli", "passes"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "pass name 'dead-code' is registered twice: by 'onnxpress' and by 'dup-vendor'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plugin_with_wrong_api_version_is_refused(tmp_path: Path, monkeypatch) -> None:
    from onnxpress.irpasses.core import Plugin, PluginError, Registry

    with pytest.raises(PluginError, match="targets onnxpress plugin API 99, this onnxpress provides 1"):
        Registry(discover=False).add_plugin(Plugin(api_version=99), "future-vendor")
    reset_default_registry()
