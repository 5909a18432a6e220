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


RTX_REFUSED = {"9.0": "Hopper (H100/H200)", "10.0": "Blackwell datacenter (B200)", "10.3": "Blackwell datacenter (B300)"}
"""Compute capabilities TensorRT-RTX does not run on (it targets RTX GPUs); 9.0 seen refused here."""
