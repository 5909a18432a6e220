"""Streaming calibration statistics and calibrators (groundwork for QDQ insertion)."""

from __future__ import annotations

import numpy as np
import onnxpress
import pytest
from onnxpress.irpasses.core import DataError
from onnxpress.irpasses.quant import calibrators
from onnxpress.irpasses.quant.collect import activation_tensors, collect_histograms
from onnxpress.irpasses.quant.histogram import TensorHistogram
from onnxpress.tools.testing import mlp_proto

RNG = np.random.default_rng(0)


def test_histogram_growth_keeps_every_count() -> None:
    h = TensorHistogram(bins=64)
    first, second = RNG.uniform(-1, 1, 1000), RNG.uniform(-7, 7, 500)
    h.update(first)
    h.update(second)
    assert h.counts.sum() == 1500 and h.top >= 7
    assert h.minimum == pytest.approx(min(first.min(), second.min()))
    # after merging, counts below 1.0 are still exactly those of |x| < 1 (bin edges stay aligned)
    below_one = h.counts[h.edges[1:] <= 1.0].sum()
    assert below_one == np.sum(np.abs(np.concatenate([first, second])) < h.edges[h.edges <= 1.0][-1])


def test_large_tensors_are_binned_sampled_with_exact_extremes() -> None:
    """Over ``max_binned`` values a tensor is binned every k-th value, each count weighted k: the total and the
    percentile stay those of all the data, and the extremes (not sampled) still set the range."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal(1_000_003).astype(np.float32)
    data[12345] = 40.0  # an extreme the subsample skips
    sampled, full = TensorHistogram(max_binned=1 << 16), TensorHistogram(max_binned=1 << 40)
    for h in (sampled, full):
        h.update(data)
    assert sampled.maximum == 40.0 and sampled.top >= 40.0
    assert abs(sampled.counts.sum() - data.size) < 16  # 16 = the step: the last stride may be short
    lo, hi = calibrators.percentile(sampled, 99.9)
    lo_full, hi_full = calibrators.percentile(full, 99.9)
    assert abs(hi - hi_full) < 0.05 * hi_full and abs(lo - lo_full) < 0.05 * abs(lo_full)


def test_calibrators_on_known_distributions() -> None:
    h = TensorHistogram()
    data = np.concatenate([RNG.standard_normal(200_000), [40.0, -35.0]])  # two outliers
    h.update(data)
    lo, hi = calibrators.minmax(h)
    assert (lo, hi) == (pytest.approx(-35.0), pytest.approx(40.0))
    _, p = calibrators.percentile(h, 99.9)
    assert p == pytest.approx(np.quantile(np.abs(data), 0.999), rel=0.02)
    _, e = calibrators.entropy(h)
    assert 2.0 < e < 10.0  # KL keeps the bulk of a unit normal and clips the outliers
    _, m = calibrators.mse(h)
    # MSE weighs the two outliers' squared error (~2,250) against rounding error over 200k values, so it
    # clips less than KL, but still below the maximum
    assert e < m < 40.0
    # KL must penalize clipping: on a uniform distribution every value above the threshold is lost mass, so
    # the threshold stays near the maximum (a candidate built from the clipped reference scores KL 0 at the
    # smallest threshold and picks it); a Relu-like tensor's exact zeros must not pull it down either
    uniform = TensorHistogram()
    uniform.update(RNG.uniform(-3, 3, 200_000))
    assert calibrators.entropy(uniform)[1] > 2.7
    relu = TensorHistogram()
    relu.update(np.maximum(RNG.standard_normal(200_000), 0.0))
    assert 2.0 < calibrators.entropy(relu)[1] < 5.0
    laplace = TensorHistogram()
    laplace.update(RNG.laplace(size=200_000))
    _, m_laplace = calibrators.mse(laplace)
    assert 3.0 < m_laplace < float(np.abs(RNG.laplace(size=200_000)).max())


def test_collect_matches_direct_activations(mlp_samples) -> None:
    model = onnxpress.load(mlp_proto())
    names = activation_tensors(model)
    assert names == ["x", "h", "ri", "y"]
    samples = list(onnxpress.frontends.sample_data.NpzSamples(mlp_samples))
    histograms = collect_histograms(model, samples, byte_budget=64)  # forces one chunk per tensor
    x = np.concatenate([s["x"] for s in samples])
    assert histograms["x"].minimum == pytest.approx(float(x.min()))
    assert histograms["x"].seen == x.size
    assert all(h.seen > 0 for h in histograms.values())


def test_empty_calibration_data_is_refused() -> None:
    with pytest.raises(DataError, match="calibration data is empty"):
        collect_histograms(onnxpress.load(mlp_proto()), [])


def test_other_statistics_ride_on_the_calibration_runs(mlp_samples) -> None:
    """GPTQ's input statistics (``also``) see every sample exactly once: in the histogram runs, or in a run of
    their own when the histograms are cached already."""
    from onnxpress.irpasses.core import PassContext
    from onnxpress.irpasses.quant.qdq import calibration_stats

    class Count:
        def __init__(self) -> None:
            self.arrays: list[np.ndarray] = []

        def update(self, values: np.ndarray) -> None:
            self.arrays.append(np.array(values))

    model = onnxpress.load(mlp_proto())
    samples = list(onnxpress.frontends.sample_data.NpzSamples(mlp_samples))
    ctx = PassContext(samples=samples)
    first, second = Count(), Count()
    stats = calibration_stats(model, ctx, ["h"], samples, also={"h": first, "ri": second})
    assert len(first.arrays) == len(second.arrays) == len(samples)
    assert stats["h"].seen == sum(a.size for a in first.arrays)  # the histogram saw the same arrays
    again = Count()
    calibration_stats(model, ctx, ["h"], samples, also={"h": again})  # histograms cached: a run of its own
    assert len(again.arrays) == len(samples)
    np.testing.assert_array_equal(np.concatenate(again.arrays), np.concatenate(first.arrays))
