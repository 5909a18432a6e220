"""Kernel tests need the native library: under CI a missing build fails them, elsewhere they are skipped
with the reason (no compiler, no npm registry)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def kernels_built() -> None:
    from onnxpress import kernels

    status = kernels.available()
    if not status.ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"onnxpress kernels did not build under CI: {status.reason}")
        pytest.skip(f"onnxpress kernels not available: {status.reason}")
