"""Every kernel test needs the native library (see ``kernels_built`` in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _needs_kernels(kernels_built: None) -> None:
    """Applies the shared guard to every test in this folder."""
