"""Output comparison: per output max abs/rel error and cosine, and a tolerance verdict."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np


@dataclasses.dataclass
class OutputError:
    name: str
    max_abs: float
    max_rel: float
    cosine: float
    within: bool
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def compare_arrays(name: str, ref: object, got: object, rtol: float, atol: float) -> OutputError:
    """Compare one output; integers and booleans must match exactly, floats within atol + rtol*|ref|.

    Sequence outputs (lists) and map outputs (dicts) are compared element by element, worst case kept.
    """
    if isinstance(ref, (list, dict)):
        if type(got) is not type(ref) or len(got) != len(ref):  # type: ignore[arg-type]
            return OutputError(name, float("inf"), float("inf"), float("nan"), False, "sequence or map differs in length")
        pairs = zip(ref, got) if isinstance(ref, list) else ((ref[k], got.get(k)) for k in ref)  # type: ignore[union-attr]
        worst: OutputError | None = None
        for i, (r, g) in enumerate(pairs):
            err = compare_arrays(f"{name}[{i}]", r, g, rtol, atol)
            worst = merge([worst], [err])[0] if worst is not None else err
        return worst or OutputError(name, 0.0, 0.0, 1.0, True)
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return OutputError(name, float("inf"), float("inf"), float("nan"), False, f"shape {list(got.shape)} != {list(ref.shape)}")
    if ref.dtype != got.dtype:
        return OutputError(name, float("inf"), float("inf"), float("nan"), False, f"dtype {got.dtype} != {ref.dtype}")
    if ref.dtype.kind in "OSU":
        same = bool(np.array_equal(ref, got))
        return OutputError(name, 0.0 if same else float("inf"), 0.0 if same else float("inf"), 1.0 if same else 0.0, same)
    r = ref.astype(np.float64).ravel()
    g = got.astype(np.float64).ravel()
    if r.size == 0:
        return OutputError(name, 0.0, 0.0, 1.0, True)
    nan_r, nan_g = np.isnan(r), np.isnan(g)
    if not np.array_equal(nan_r, nan_g):
        return OutputError(name, float("inf"), float("inf"), float("nan"), False, "NaN in different places")
    keep = ~nan_r
    r, g = r[keep], g[keep]
    inf_mismatch = not np.array_equal(r[np.isinf(r)], g[np.isinf(r)]) or np.isinf(g[~np.isinf(r)]).any()
    finite = np.isfinite(r) & np.isfinite(g)
    diff = np.abs(r[finite] - g[finite])
    max_abs = float(diff.max()) if diff.size else 0.0
    # relative to |ref|, but not below atol: near-zero references would otherwise report rel errors of 1e30
    denom = np.maximum(np.abs(r[finite]), max(atol, float(np.finfo(np.float32).tiny)))
    max_rel = float((diff / denom).max()) if diff.size else 0.0
    norm = float(np.linalg.norm(r[finite]) * np.linalg.norm(g[finite]))
    cosine = float(np.dot(r[finite], g[finite]) / norm) if norm > 0 else (1.0 if max_abs == 0 else 0.0)
    if ref.dtype.kind in "biu":
        within = max_abs == 0 and not inf_mismatch
    else:
        within = bool(np.all(diff <= atol + rtol * np.abs(r[finite]))) and not inf_mismatch
    return OutputError(name, max_abs, max_rel, cosine, within, "inf in different places" if inf_mismatch else "")


def compare_outputs(
    ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], rtol: float, atol: float
) -> list[OutputError]:
    errors = []
    for name, expected in ref.items():
        if name not in got:
            errors.append(OutputError(name, float("inf"), float("inf"), float("nan"), False, "output missing"))
            continue
        errors.append(compare_arrays(name, expected, got[name], rtol, atol))
    return errors


def merge(a: list[OutputError] | None, b: list[OutputError]) -> list[OutputError]:
    """Worst case over samples, output by output."""
    if a is None:
        return b
    merged = []
    for x, y in zip(a, b):
        merged.append(
            OutputError(
                x.name,
                max(x.max_abs, y.max_abs),
                max(x.max_rel, y.max_rel),
                min(x.cosine, y.cosine),
                x.within and y.within,
                x.note or y.note,
            )
        )
    return merged
