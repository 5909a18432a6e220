"""What "fidelity" means in a sweep: a score in [0, 1], higher is better, of a candidate's outputs against the
original's on the eval data. ``cosine`` (default): the lowest cosine similarity of any output; ``top1``: the
share of rows whose argmax over the last axis of the first output agrees (classifiers, token heads); or
``MODULE:FUNCTION``, the user's own ``f(reference, outputs) -> float`` over lists of {output name: array}."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from onnxpress.irpasses.core.errors import DataError

Metric = Callable[[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]], float]


def top1(reference: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]) -> float:
    agree = total = 0
    for ref, got in zip(reference, outputs, strict=True):
        name = next(iter(ref))
        a, b = np.asarray(ref[name]), np.asarray(got[name])
        if a.ndim == 0 or a.shape != b.shape:
            raise DataError(f"top1: output '{name}' has shape {list(a.shape)} (candidate {list(b.shape)}); it needs a class axis last")
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.size // a.shape[-1]
    return agree / total if total else 0.0


def resolve(name: str) -> Metric | None:
    """None for ``cosine`` (computed with the per-output errors); a callable otherwise. A bad name fails before
    any candidate runs."""
    if name == "cosine":
        return None
    if name == "top1":
        return top1
    module, sep, function = name.partition(":")
    if not sep:
        raise DataError(f"--metric {name!r}: expected cosine, top1 or MODULE:FUNCTION")
    try:
        found = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise DataError(f"--metric {name!r}: cannot import {function} from {module} ({err})") from err
    if not callable(found):
        raise DataError(f"--metric {name!r}: {function} is not callable")
    return found
