"""Every instruction-set path against the numpy references, each in its own process (the path is chosen once
per process): the AVX2 and portable paths run on an AVX-512 machine too, so CI on either kind of CPU checks
the code the other kind runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("isa", ["best", "avx2", "scalar"])
def test_selftest_passes_on_every_instruction_set(isa: str) -> None:
    env = dict(os.environ)
    if isa != "best":
        env["ONNXPRESS_KERNELS_ISA"] = isa
    result = subprocess.run([sys.executable, "-m", "onnxpress.kernels", "selftest"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {"best": None, "avx2": "avx2", "scalar": "portable"}[isa]
    if expected == "portable" or (expected == "avx2" and "avx2" in _cpu_flags()):
        assert result.stdout.startswith(expected), result.stdout


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:
        return ""
