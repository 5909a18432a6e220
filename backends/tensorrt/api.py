"""One code path for full TensorRT (``tensorrt``) and TensorRT-RTX (``tensorrt_rtx``): same Python API."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from types import ModuleType


def load_tensorrt(prefer: str | None = None) -> tuple[ModuleType, str] | None:
    """The TensorRT module and its flavour ('tensorrt' or 'tensorrt-rtx'), or None if neither imports."""
    order = ["tensorrt", "tensorrt_rtx"] if prefer != "tensorrt-rtx" else ["tensorrt_rtx", "tensorrt"]
    for name in order:
        try:
            module = importlib.import_module(name)
        except Exception:  # a broken stub install raises more than ImportError
            continue
        if hasattr(module, "Builder"):
            return module, name.replace("_", "-")
    return None


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs on this machine with their compute capability (empty without a driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            found.append({"name": parts[0], "compute_capability": parts[1], "driver": parts[2]})
    return found


RTX_SUPPORTED = ("8.0", "8.6", "8.9", "12.0", "12.1")
"""Compute capabilities TensorRT-RTX 1.7 runs on, plus anything above 12.0 (its own refusal message on an
H100, 2026-11-22: 'Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0')."""


def rtx_runs_on(compute_capability: str) -> bool:
    try:
        value = float(compute_capability)
    except ValueError:
        return False
    return compute_capability in RTX_SUPPORTED or value > 12.0
