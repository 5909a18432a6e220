"""Streaming per-tensor statistics in bounded memory: min, max and a histogram of |x| whose range grows.

Memory per tensor is the bin array (2,048 float64 = 16 KiB), however many samples go through. When a batch
exceeds the current range, the range doubles until it fits and neighbouring bins merge, so earlier counts
are kept exactly (at half the resolution) instead of re-reading old data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_BINS = 2048


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

    def update(self, values: np.ndarray) -> None:
        if self.channel_axis is not None:
            self._update_channels(np.asarray(values))
        data = np.asarray(values, dtype=np.float32).reshape(-1)
        if not np.isfinite(data).all():
            data = data[np.isfinite(data)]
        if data.size == 0:
            return
        self.seen += data.size
        self.minimum = min(self.minimum, float(data.min()))
        self.maximum = max(self.maximum, float(data.max()))
        magnitude = np.abs(data)  # the one full-size temporary (float32); binning reuses it in place
        peak = float(magnitude.max())
        if self.counts.size == 0:
            self.top = peak if peak > 0 else 1.0
            self.counts = np.zeros(self.bins, dtype=np.float64)
        while peak > self.top:  # double the range: merge pairs of bins, keep the counts
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.concatenate([merged, np.zeros(self.bins // 2)])
            self.top *= 2.0
        # np.histogram would make float64 and int64 copies (about 5x the data); scale in place, bin as int32
        np.multiply(magnitude, np.float32(self.bins / self.top), out=magnitude)
        index = magnitude.astype(np.int32)
        np.minimum(index, self.bins - 1, out=index)
        self.counts += np.bincount(index, minlength=self.bins)

    def _update_channels(self, values: np.ndarray) -> None:
        if values.ndim == 0:
            return
        moved = np.moveaxis(values, self.channel_axis, -1).reshape(-1, values.shape[self.channel_axis])
        sums = moved.sum(axis=0, dtype=np.float64)
        if self.channel_sum is None or self.channel_sum.shape != sums.shape:
            self.channel_sum, self.channel_count = sums, moved.shape[0]
        else:
            self.channel_sum += sums
            self.channel_count += moved.shape[0]

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
