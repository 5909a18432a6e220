"""Shared test options: slow tests (real models, the ONNX conformance corpus) run with --runslow."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--runslow") or os.environ.get("ONNXPRESS_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="no NVIDIA GPU on this machine")
    has_gpu = os.path.exists("/dev/nvidia0")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def kernels_built() -> None:
    """The native kernel library: under CI a missing build fails the test, elsewhere it is skipped with the
    reason (no compiler, no npm registry)."""
    from onnxpress import kernels

    status = kernels.available()
    if not status.ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"onnxpress kernels did not build under CI: {status.reason}")
        pytest.skip(f"onnxpress kernels not available: {status.reason}")


# ----- fixtures over the shared model builders in onnxpress.tools.testing ---------------------------
from pathlib import Path

import numpy as np
import onnx
from onnxpress.tools.testing import mlp_proto as _mlp_proto


@pytest.fixture()
def mlp_proto() -> onnx.ModelProto:
    return _mlp_proto()


@pytest.fixture()
def mlp_file(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "mlp.onnx"
    path.parent.mkdir()
    onnx.save_model(_mlp_proto(), path)
    return path


@pytest.fixture()
def mlp_external(tmp_path: Path) -> Path:
    """The MLP with every weight in ``mlp.onnx.data`` beside it."""
    path = tmp_path / "ext" / "mlp.onnx"
    path.parent.mkdir()
    onnx.save_model(_mlp_proto(), path, save_as_external_data=True, all_tensors_to_one_file=True, location="mlp.onnx.data", size_threshold=0)
    return path


@pytest.fixture()
def mlp_samples(tmp_path: Path) -> Path:
    path = tmp_path / "samples.npz"
    np.savez(path, x=np.random.default_rng(1).standard_normal((3, 1, 8)).astype(np.float32))
    return path
