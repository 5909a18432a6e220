"""k x k convolutions as two or three cheaper ones: spatial SVD (k x 1 then 1 x k) and Tucker-2 (1x1 -> k x k
core -> 1x1), with every candidate's output error measured exactly on the calibration patches.

With the im2col second moment H = E[p pᵀ] of the layer's input patches (p ordered (channel, row, column) like
the kernel's [O, I, kh, kw] flattened), a replacement kernel Ŵ changes the output by tr(ΔWᵀ H ΔW) in energy,
ΔW = W - Ŵ as [(I kh kw), O]: the same number for either family, so the two compete on one curve per layer.
Whitened: spatial SVD truncates Lᵀ M (M the kernel as [(I kh), (kw O)], H_col = L Lᵀ the column patches'
moment, cross terms between columns neglected); Tucker-2 truncates the input channels by the whitened SVD with
the channel moment and the output channels by the PCA of the output (Wᵀ H W). svd: the plain SVDs / HOSVD.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from onnxpress.irpasses.lowrank.factor import Choice, Curve, cholesky, rank_grid
from onnxpress.irpasses.quant.gptq import GramMatrix


@dataclasses.dataclass
class ConvGeometry:
    """What the rewrite must keep: strides, dilations and begin/end pads along H and W."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]  # h_begin, w_begin, h_end, w_end

    @classmethod
    def of(cls, attributes: dict, kernel: tuple[int, int]) -> ConvGeometry:
        return cls(kernel, tuple(attributes.get("strides") or (1, 1)), tuple(attributes.get("dilations") or (1, 1)),
                   tuple(attributes.get("pads") or (0, 0, 0, 0)))


class PatchGram:
    """Streaming E[p pᵀ] of a conv's input patches (im2col) at up to ``max_rows`` random output positions per
    sample: only the sampled patches are gathered, and GramMatrix accumulates them (bounded memory)."""

    def __init__(self, geometry: ConvGeometry, max_rows: int = 4096, seed: int = 0) -> None:
        self.geometry = geometry
        self.gram = GramMatrix(axis=-1, max_rows=max_rows, seed=seed)
        self.max_rows = max_rows
        self.rng = np.random.default_rng(seed)
        self.sum: np.ndarray | None = None  # of the patches, for their mean (the bias correction)
        self.count = 0

    def update(self, values: np.ndarray) -> None:
        x = self.padded(values)
        if x is None:
            return
        flat = self.patches(x, self.positions(x.shape, self.rng))
        if not len(flat):
            return
        self.gram.update(flat)
        self.sum = flat.sum(axis=0, dtype=np.float64) + (self.sum if self.sum is not None else 0.0)
        self.count += len(flat)

    def padded(self, values: np.ndarray) -> np.ndarray | None:
        """The input with the conv's pads applied (None: not 4-D)."""
        x = np.asarray(values, dtype=np.float32)
        if x.ndim != 4:
            return None
        g = self.geometry
        return np.pad(x, ((0, 0), (0, 0), (g.pads[0], g.pads[2]), (g.pads[1], g.pads[3])))

    def _output_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.geometry.kernel, self.geometry.strides, self.geometry.dilations
        return (shape[2] - dh * (kh - 1) - 1) // sh + 1, (shape[3] - dw * (kw - 1) - 1) // sw + 1

    def positions(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Up to ``max_rows`` random output positions (flat over batch and the output grid) of a padded input:
        shared by both models' inputs in the sequential refit (``sequential``), so their patches pair up."""
        out_h, out_w = self._output_size(shape)
        if out_h < 1 or out_w < 1:
            return np.zeros(0, dtype=np.int64)
        count = shape[0] * out_h * out_w
        return rng.choice(count, min(count, self.max_rows), replace=False)

    def patches(self, x: np.ndarray, picks: np.ndarray) -> np.ndarray:
        """The padded input's patches at ``picks`` as rows [len(picks), I kh kw], ordered like the kernel."""
        (kh, kw), (sh, sw), (dh, dw) = self.geometry.kernel, self.geometry.strides, self.geometry.dilations
        out_h, out_w = self._output_size(x.shape)
        if out_h < 1 or out_w < 1:
            return np.zeros((0, x.shape[1] * kh * kw), dtype=np.float32)
        n, rest = np.divmod(picks, out_h * out_w)
        oh, ow = np.divmod(rest, out_w)
        rows = oh[:, None] * sh + np.arange(kh) * dh  # [R, kh]
        cols = ow[:, None] * sw + np.arange(kw) * dw  # [R, kw]
        channels = np.arange(x.shape[1])
        patches = x[n[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
        return patches.reshape(len(picks), -1)

    @property
    def empty(self) -> bool:
        return self.gram.empty

    def hessian(self) -> np.ndarray:
        return self.gram.hessian()

    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)


class ChannelMean:
    """Streaming mean of an activation along one axis (every other axis pooled)."""

    def __init__(self, axis: int = -1) -> None:
        self.axis, self.sum, self.count = axis, None, 0

    def update(self, values: np.ndarray) -> None:
        x = np.moveaxis(np.asarray(values), self.axis % np.ndim(values), -1)
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        self.sum = flat.sum(axis=0) + (self.sum if self.sum is not None else 0.0)
        self.count += len(flat)

    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)


class Fanout:
    """Several accumulators fed the same tensor (convs of different kernels reading one input)."""

    def __init__(self, parts: list) -> None:
        self.parts = parts

    def update(self, values: np.ndarray) -> None:
        for part in self.parts:
            part.update(values)


@dataclasses.dataclass
class ConvFactors:
    """A k x k kernel [O, I, kh, kw], its patch moment (identity without data) and both families' factors."""

    kernel: np.ndarray
    gram: np.ndarray
    """The second moment the error is measured with: centered (the covariance) where the bias absorbs the mean shift."""
    method: str
    damp: float
    energy_gram: np.ndarray | None = None
    """The uncentered second moment, for the output energy errors are relative to (default: ``gram``)."""

    def __post_init__(self) -> None:
        o, i, kh, kw = self.kernel.shape
        w = self.kernel.astype(np.float64)
        h = self.gram.astype(np.float64)
        energy = h if self.energy_gram is None else self.energy_gram.astype(np.float64)
        self.total = max(float(((energy @ self._patch(w)) * self._patch(w)).sum()), 1e-30)
        h6 = h.reshape(i, kh, kw, i, kh, kw)
        whitened = self.method == "whitened"
        # spatial: M [(i, a), (b, o)]
        m = w.transpose(1, 2, 3, 0).reshape(i * kh, kw * o)
        if kh > 1 and kw > 1:
            h_col = np.mean([h6[:, :, b, :, :, b] for b in range(kw)], axis=0).reshape(i * kh, i * kh)
            self.spatial = _left_svd(m, h_col if whitened else None, self.damp)
        else:
            self.spatial = None
        # tucker input side: W_(I) [i, (o, a, b)]; output side: PCA of the output (whitened) or of W_(O)
        h_chan = np.einsum("iabjab->ij", h6) / (kh * kw)
        self.tucker_in = _left_svd(w.transpose(1, 0, 2, 3).reshape(i, -1), h_chan if whitened else None, self.damp, balanced=False)
        w_o = w.reshape(o, -1)
        if whitened:
            values, vectors = np.linalg.eigh(w_o @ h @ w_o.T)
            self.tucker_out = vectors[:, np.argsort(values)[::-1]]
        else:
            self.tucker_out = np.linalg.svd(w_o, full_matrices=False)[0]

    @staticmethod
    def _patch(w: np.ndarray) -> np.ndarray:
        return w.reshape(w.shape[0], -1).T

    def error(self, approx: np.ndarray) -> float:
        delta = self._patch(self.kernel.astype(np.float64) - approx)
        return float(((self.gram.astype(np.float64) @ delta) * delta).sum() / self.total)

    def weights(self, choice: Choice) -> list[np.ndarray | None]:
        """Spatial: [k x 1 kernel, 1 x k kernel]; tucker: [1x1 in or None, core, 1x1 out or None]."""
        o, i, kh, kw = self.kernel.shape
        if choice.kind == "spatial":
            (r,) = choice.ranks
            left, right = self.spatial
            first = left[:, :r].T.reshape(r, i, kh, 1)
            second = right[:r].reshape(r, kw, o).transpose(2, 0, 1)[:, :, None, :]
            return [first, second]
        r1, r2 = choice.ranks
        w = self.kernel.astype(np.float64)
        if r1 < i:
            project, core_in = self.tucker_in[0][:, :r1], self.tucker_in[1][:r1]  # [I, r1], [r1, (o, a, b)]
            head = project.T.reshape(r1, i, 1, 1)
            core = core_in.reshape(r1, o, kh, kw).transpose(1, 0, 2, 3)
        else:
            head, core = None, w
        tail = None
        if r2 < o:
            basis = self.tucker_out[:, :r2]  # [O, r2]
            core = np.einsum("orab,os->srab", core, basis)
            tail = basis.reshape(o, r2, 1, 1)
        return [head, core, tail]

    def approximation(self, choice: Choice) -> np.ndarray:
        parts = self.weights(choice)
        if choice.kind == "spatial":
            first, second = parts
            return np.einsum("ria,orb->oiab", first[..., 0], second[:, :, 0, :])
        head, core, tail = parts
        if head is not None:
            core = np.einsum("srab,ri->siab", core, head[:, :, 0, 0])
        if tail is not None:
            core = np.einsum("os,siab->oiab", tail[:, :, 0, 0], core)
        return core


def _left_svd(matrix: np.ndarray, gram: np.ndarray | None, damp: float, balanced: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(left [rows, m], right [m, cols]) with left[:, :r] @ right[:r] the best rank-r fit of ``matrix`` as the
    data sees it (whitened by the Cholesky factor of ``gram``) or as a plain matrix."""
    from scipy.linalg import solve_triangular

    lower = cholesky(gram, damp) if gram is not None else None
    u, s, vt = np.linalg.svd(matrix if lower is None else lower.T @ matrix, full_matrices=False)
    scale = np.sqrt(s) if balanced else np.ones_like(s)
    left, right = u * scale, (s / scale)[:, None] * vt
    if lower is not None:
        left = solve_triangular(lower.T, left, lower=False)
    return left, right


@dataclasses.dataclass
class ConvShapes:
    """Per-sample positions the cost counts: output (oh, ow) and input (ih, iw) spatial sizes, batch folded in."""

    batch: int
    ih: int
    iw: int
    oh: int
    ow: int


def conv_curve(factors: ConvFactors, shapes: ConvShapes, multiple: int) -> Curve:
    """Every paying spatial-SVD rank and Tucker-2 rank pair (multiples of ``multiple``, or the full side) with
    its parameters, multiply-adds on ``shapes`` and exact relative output error."""
    o, i, kh, kw = factors.kernel.shape
    n, out_pos = shapes.batch, shapes.batch * shapes.oh * shapes.ow
    whole_params = o * i * kh * kw
    choices: list[Choice] = []
    if factors.spatial is not None:
        limit = min(i * kh, kw * o)
        for r in rank_grid(limit, multiple):
            params = r * (i * kh + o * kw)
            if params >= whole_params:
                break
            macs = n * shapes.oh * shapes.iw * r * i * kh + out_pos * o * r * kw
            choice = Choice("spatial", (r,), params, macs, 0.0)
            choices.append(dataclasses.replace(choice, error=factors.error(factors.approximation(choice))))
    for r1 in rank_grid(i, multiple, 12) + [i]:
        for r2 in rank_grid(o, multiple, 12) + [o]:
            if (r1, r2) == (i, o):
                continue
            params = (i * r1 if r1 < i else 0) + r2 * r1 * kh * kw + (r2 * o if r2 < o else 0)
            if params >= whole_params:
                continue
            macs = (n * shapes.ih * shapes.iw * i * r1 if r1 < i else 0) + out_pos * r2 * r1 * kh * kw + (out_pos * r2 * o if r2 < o else 0)
            choice = Choice("tucker", (r1, r2), params, macs, 0.0)
            choices.append(dataclasses.replace(choice, error=factors.error(factors.approximation(choice))))
    return Curve(whole_params, out_pos * whole_params, choices)
