"""onnxpress sweep: candidates, isolation of failures, identical results however it runs, resume after a kill,
and the errors that must come before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxpress.irpasses.core.errors import PassOptionError, PipelineError
from onnxpress.tools.cli import main
from onnxpress.tools.sweep.candidates import expand, split_top_level
from onnxpress.tools.testing import conv_net_proto

PIPELINES = "optimize;int8;int8-dynamic;w8;cluster4"


@pytest.fixture(scope="module")
def conv_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small Conv net with disjoint calibration and eval data (fast enough to sweep many times)."""
    folder = tmp_path_factory.mktemp("sweep-case")
    onnx.save_model(conv_net_proto(), folder / "net.onnx")
    rng = np.random.default_rng(1)
    np.savez(folder / "calib.npz", x=rng.standard_normal((8, 1, 3, 16, 16)).astype(np.float32))
    np.savez(folder / "eval.npz", x=rng.standard_normal((4, 1, 3, 16, 16)).astype(np.float32))
    return {"model": folder / "net.onnx", "calib": folder / "calib.npz", "eval": folder / "eval.npz", "root": folder}


def _sweep_args(case: dict[str, Path], out: Path, *extra: str, pipelines: str = PIPELINES) -> list[str]:
    grid = ["--grid", "qdq.calibrator=percentile,minmax"] if "int8;" in pipelines + ";" else []
    return ["sweep", str(case["model"]), "--calib", str(case["calib"]), "--eval", str(case["eval"]), "--pipelines", pipelines,
            *grid, "-o", str(out), "--no-latency", *extra]


def test_candidates_cross_the_grid_and_drop_duplicates() -> None:
    found = expand("int8;w8;convert-opset{min=17},optimize,qdq,dedup-initializers,dead-code", ["qdq.calibrator=minmax,entropy"])
    assert [c.label for c in found] == ["int8 [qdq.calibrator=minmax]", "int8 [qdq.calibrator=entropy]", "w8"]
    assert "calibrator=entropy" in found[1].recipe and "calibrator" not in found[2].recipe
    assert len({c.id for c in found}) == 3
    assert split_top_level("a{x=[1;2]};b", ";") == ["a{x=[1;2]}", "b"]


@pytest.mark.parametrize(
    ("pipelines", "grid", "error", "words"),
    [
        ("int8;no-such-pipeline", [], PipelineError, "no-such-pipeline"),
        ("int8", ["qdq.no_option=1"], PassOptionError, "no_option"),
        ("w8", ["qdq.calibrator=minmax"], PassOptionError, "no pipeline in --pipelines runs that pass"),
        ("int8", ["qdq.calibrator=nonsense"], PassOptionError, "calibrator"),
        ("int8", ["qdq-calibrator"], PipelineError, "PASS.OPTION=VALUE"),
    ],
)
def test_bad_candidates_fail_before_work(pipelines: str, grid: list[str], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        expand(pipelines, grid)


def test_cli_bad_input_exits_2_and_writes_nothing(conv_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    assert main(_sweep_args(conv_case, out, pipelines="int8;nope")) == 2
    assert "nope" in capsys.readouterr().err and not out.exists()
    started = time.monotonic()
    assert main(_sweep_args(conv_case, out, "--ray", "127.0.0.1:1")) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err and not out.exists()
    assert time.monotonic() - started < 30
    assert main(_sweep_args(conv_case, out, "--ray", "not-an-address")) == 2
    assert "HOST:PORT" in capsys.readouterr().err and not out.exists()


def test_a_failing_candidate_does_not_stop_the_others(conv_case: dict[str, Path], tmp_path: Path) -> None:
    """An exclude entry naming no node is the user's error, found when the pass runs: that candidate fails with
    the pass's message, the others finish."""
    out = tmp_path / "sweep"
    code = main(_sweep_args(conv_case, out, "--workers", "2", pipelines="optimize;lowrank{exclude=[nope]};w8"))
    assert code == 0
    rows = {r["label"]: r for r in json.loads((out / "results.json").read_text())["candidates"]}
    assert rows["lowrank{exclude=[nope]}"]["status"] == "failed" and "'nope'" in rows["lowrank{exclude=[nope]}"]["error"]
    assert rows["optimize"]["status"] == rows["w8"]["status"] == "ok"
    page = (out / "report.html").read_text()
    assert "failed: lowrank: exclude entry &#39;nope&#39; matches no node name or op type" in page
    assert rows["optimize"]["fidelity"]["min_cosine"] > 0.99999


def test_timeouts_are_reported_and_run_again(conv_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    assert main(_sweep_args(conv_case, out, "--timeout", "0.2", pipelines="optimize;w8")) == 3  # a worker starts slower
    assert "timed out after 0.2 s" in capsys.readouterr().err
    assert {r["status"] for r in json.loads((out / "results.json").read_text())["candidates"]} == {"unfinished"}
    assert main(_sweep_args(conv_case, out, pipelines="optimize;w8")) == 0
    assert "0 done before; running 2" in capsys.readouterr().err


def test_results_identical_serial_parallel_and_ray(conv_case: dict[str, Path], tmp_path: Path) -> None:
    """The transform, size and fidelity of each candidate do not depend on how many run at once, or where."""
    pytest.importorskip("ray")
    runs = {"serial": ["--workers", "1"], "local2": ["--workers", "2"], "ray2": ["--ray", "local", "--workers", "2"]}
    for name, extra in runs.items():
        assert main(_sweep_args(conv_case, tmp_path / name, *extra)) == 0, name
    serial = (tmp_path / "serial" / "results.json").read_bytes()
    assert (tmp_path / "local2" / "results.json").read_bytes() == serial
    assert (tmp_path / "ray2" / "results.json").read_bytes() == serial
    results = json.loads(serial)
    assert len(results["candidates"]) == 6 and all(r["status"] == "ok" for r in results["candidates"])
    assert results["pareto_size_fidelity"], "the front always holds at least the smallest most faithful point"
    int8 = [r for r in results["candidates"] if r["label"].startswith("int8 [")]
    assert int8[0]["sha256"] != int8[1]["sha256"], "the grid changed the calibrator, so the models differ"


def test_rerun_on_another_model_is_refused(conv_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    assert main(_sweep_args(conv_case, out, pipelines="optimize")) == 0
    before = sorted(p.name for p in (out / "candidates").iterdir())
    other = tmp_path / "other.onnx"
    proto = conv_net_proto()
    proto.graph.initializer[0].raw_data = bytes(len(proto.graph.initializer[0].raw_data))
    onnx.save_model(proto, other)
    args = _sweep_args(conv_case, out, pipelines="optimize;w8")
    args[1] = str(other)
    assert main(args) == 2
    assert "holds the results of another model" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "candidates").iterdir()) == before


def test_killed_sweep_resumes_with_only_the_missing_candidates(conv_case: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "onnxpress.tools.cli", *_sweep_args(conv_case, out, "--workers", "1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("candidates/*/result.json"))) < 3:  # the original + 2
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.5)  # the running worker notices its driver is gone and exits
    done_at_kill = len(list(out.glob("candidates/*/result.json"))) - 1
    assert 2 <= done_at_kill < 6, "killed midway"
    assert not (out / "results.json").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done_at_kill} done before; running {6 - done_at_kill}" in rerun.stderr
    full = tmp_path / "full"
    assert main(_sweep_args(conv_case, full, "--workers", "2")) == 0
    assert (out / "results.json").read_bytes() == (full / "results.json").read_bytes()


def test_per_layer_sensitivity_spreads_as_candidates(tmp_path: Path) -> None:
    """Leave-one-out: pruning 70 % of an MLP hurts; keeping either layer out recovers part of it, and the two
    parts are scored by separate candidates (2 workers), recorded in graph order."""
    from onnxpress.tools.testing import mlp_proto

    onnx.save_model(mlp_proto(hidden=32), tmp_path / "mlp.onnx")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((16, 2, 8)).astype(np.float32))
    out = tmp_path / "sweep"
    assert main(["sweep", str(tmp_path / "mlp.onnx"), "--calib", str(tmp_path / "x.npz"), "--per-layer", "--workers", "2",
                 "--pipelines", "prune{pattern=unstructured,sparsity=0.7,min_elements=16}", "-o", str(out), "--no-latency"]) == 0
    results = json.loads((out / "results.json").read_text())
    scores = results["per_layer"]
    assert [s["layer"] for s in scores] == ["mm1", "mm2"]
    whole = results["candidates"][0]["fidelity"]["score"]
    assert whole < 0.99 and all(s["recovered"] > 0.05 and s["score"] <= 1.0 for s in scores)
    assert 'data-plot="per-layer"' in (out / "report.html").read_text()


def test_per_layer_needs_a_pass_with_an_exclude_list(conv_case: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = _sweep_args(conv_case, tmp_path / "s", "--per-layer", pipelines="optimize")
    assert main(args) == 2
    assert "no pass in 'optimize' takes an exclude list" in capsys.readouterr().err


def test_top1_metric_and_a_metric_of_ones_own(conv_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "top1"
    assert main([*_sweep_args(conv_case, out, pipelines="optimize;w8"), "--metric", "top1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["sweep"]["metric"] == "top1"
    assert all(r["fidelity"]["metric"] == "top1" and r["fidelity"]["score"] == 1.0 for r in results["candidates"])
    assert main([*_sweep_args(conv_case, tmp_path / "bad", pipelines="optimize"), "--metric", "nosuchmodule:f"]) == 2
    assert "cannot import f from nosuchmodule" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_an_existing_ray_cluster_by_address(conv_case: dict[str, Path], tmp_path: Path) -> None:
    """A head node started with 'ray start' (token authentication on, as Ray 2.60 starts it): without the token
    mode the client is refused with a clear error and nothing written; with it, the results equal a serial run's.
    Each sweep is its own process, as from the command line: Ray reads the mode when it is imported."""
    pytest.importorskip("ray")
    import socket

    ray_cli = Path(sys.executable).with_name("ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    started = subprocess.run([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                              "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        plain = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # its own process: Ray keeps the mode it read
        refused = subprocess.run([sys.executable, "-m", "onnxpress.tools.cli", *_sweep_args(
            conv_case, tmp_path / "refused", "--ray", f"127.0.0.1:{port}", pipelines="optimize;w8")],
            capture_output=True, text=True, env=plain, timeout=300)
        assert refused.returncode == 2 and "refused this client's authentication token" in refused.stderr, refused.stderr
        assert "InvalidAuthToken" not in refused.stderr, "Ray's own retry lines stay off the terminal"
        assert not (tmp_path / "refused").exists()
        accepted = subprocess.run([sys.executable, "-m", "onnxpress.tools.cli", *_sweep_args(
            conv_case, tmp_path / "cluster", "--ray", f"127.0.0.1:{port}", pipelines="optimize;w8")],
            capture_output=True, text=True, env=env, timeout=300)
        assert accepted.returncode == 0, accepted.stderr
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, timeout=120)
    assert main(_sweep_args(conv_case, tmp_path / "serial", pipelines="optimize;w8")) == 0
    assert (tmp_path / "cluster" / "results.json").read_bytes() == (tmp_path / "serial" / "results.json").read_bytes()


def test_eval_data_that_does_not_fit_the_model_is_refused_first(conv_case: dict[str, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "wrong.npz", y=np.zeros((2, 1, 3, 16, 16), np.float32))
    args = _sweep_args(conv_case, tmp_path / "never", pipelines="optimize")
    args[args.index("--eval") + 1] = str(tmp_path / "wrong.npz")
    assert main(args) == 2
    assert "input names do not match the model" in capsys.readouterr().err and not (tmp_path / "never").exists()
