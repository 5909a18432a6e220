"""Sample data files: an uncompressed .npz is read one sample at a time, a compressed one whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnxpress.frontends.sample_data import NpzSamples, npz_arrays

RNG = np.random.default_rng(4)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_samples_are_exact_whatever_the_layout(tmp_path: Path, save) -> None:
    images = RNG.standard_normal((6, 1, 3, 8, 8)).astype(np.float32)
    ids = np.arange(6, dtype=np.int64)
    table = np.asfortranarray(RNG.standard_normal((6, 5)))  # a Fortran-ordered array stays exact
    save(tmp_path / "d.npz", x=images, ids=ids, t=table)
    samples = NpzSamples(tmp_path / "d.npz")
    assert len(samples) == 6
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(sample["x"], images[i])
        assert sample["ids"] == ids[i]
        np.testing.assert_array_equal(sample["t"], table[i])
    arrays = npz_arrays(tmp_path / "d.npz")
    read_by_sample = not isinstance(arrays["x"], np.ndarray)
    assert read_by_sample == (save is np.savez)  # uncompressed members are read one sample at a time
    assert isinstance(arrays["t"], np.ndarray)  # Fortran order: loaded whole
