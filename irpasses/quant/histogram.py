"""Streaming per-tensor statistics in bounded memory: min, max and a histogram of |x| whose range grows.

Memory per tensor is the bin array (2,048 float64 = 16 KiB), however many samples go through. When a batch
exceeds the current range, the range doubles until it fits and neighbouring bins merge, so earlier counts
are kept exactly (at half the resolution) instead of re-reading old data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_BINS = 2048
BINNED_PER_UPDATE = 1 << 18
"""At most this many values of one sample's tensor are binned: a larger tensor is binned every k-th value, each
count weighted k (min and max stay exact, so the range never misses a value). Binning every value was over a
quarter of PP-OCRv4 det's int8 time (32 pages: 5.9 of 20 s); binning at most 2^18 took 3-4 s off, and the
model's mask IoU on 12 held-out pages moved 0.9595 -> 0.9611 (calibration noise: the percentile calibrator's
99.999th value of 32 pages still has about 80 sampled values above it)."""


@dataclasses.dataclass
class TensorHistogram:
    bins: int = DEFAULT_BINS
    minimum: float = np.inf
    maximum: float = -np.inf
    top: float = 0.0
    """Upper edge of the |x| histogram; bins are [i * top / bins, (i + 1) * top / bins)."""
    counts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    seen: int = 0
    channel_axis: int | None = None
    """When set, also the per-channel mean along this axis (bias correction needs E[x] per input channel)."""
    channel_sum: np.ndarray | None = None
    channel_count: int = 0
    max_binned: int = BINNED_PER_UPDATE
    binned: bool = True
    """False: only the per-channel mean is kept (a layer whose activations stay float still wants E[x] for
    bias correction; binning is most of calibration's numpy time)."""

    def update(self, values: np.ndarray) -> None:
        """Add one sample's values; ``values`` is only read (a caller's array may be reused elsewhere)."""
        values = np.asarray(values)
        if self.channel_axis is not None:
            self._update_channels(values)
        if not self.binned:
            self.seen += values.size
            return
        data = values.reshape(-1)
        if data.dtype != np.float32:
            data = data.astype(np.float32)
        if data.size == 0:
            return
        lo, hi = float(data.min()), float(data.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN or inf somewhere (min/max propagate them)
            data = data[np.isfinite(data)]
            if data.size == 0:
                return
            lo, hi = float(data.min()), float(data.max())
        self.seen += data.size
        self.minimum, self.maximum = min(self.minimum, lo), max(self.maximum, hi)
        peak = max(-lo, hi)
        if self.counts.size == 0:
            self.top = peak if peak > 0 else 1.0
            self.counts = np.zeros(self.bins, dtype=np.float64)
        while peak > self.top:  # double the range: merge pairs of bins, keep the counts
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.concatenate([merged, np.zeros(self.bins // 2)])
            self.top *= 2.0
        # np.histogram would make float64 and int64 copies (about 5x the data): one float32 temporary scaled
        # in place, binned as int32; |x| == top lands one past the end and is folded into the last bin
        step = -(-data.size // self.max_binned)
        magnitude = np.abs(data[::step])
        np.multiply(magnitude, np.float32(self.bins / self.top), out=magnitude)
        counts = np.bincount(magnitude.astype(np.int32), minlength=self.bins + 1)
        counts[self.bins - 1] += counts[self.bins :].sum()
        self.counts += counts[: self.bins] * step

    def _update_channels(self, values: np.ndarray) -> None:
        if values.ndim == 0:
            return
        axis = self.channel_axis % values.ndim
        channels = values.shape[axis]
        # (before, channels, after) is a free view of a contiguous array; moving the axis last would copy it
        grouped = values.reshape(int(np.prod(values.shape[:axis])), channels, -1)
        sums = grouped.sum(axis=(0, 2), dtype=np.float64)
        count = grouped.shape[0] * grouped.shape[2]
        if self.channel_sum is None or self.channel_sum.shape != sums.shape:
            self.channel_sum, self.channel_count = sums, count
        else:
            self.channel_sum += sums
            self.channel_count += count

    def channel_mean(self) -> np.ndarray | None:
        if self.channel_sum is None or self.channel_count == 0:
            return None
        return self.channel_sum / self.channel_count

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.top, self.bins + 1)

    def centers(self) -> np.ndarray:
        e = self.edges
        return (e[:-1] + e[1:]) / 2
