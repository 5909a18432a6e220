"""Input specs: ``NAME:SHAPE:DTYPE`` (CLI ``--input``, API ``inputs=``), checked against what the model declares.

A spec says what a converter should trace or fix: ``images:1x224x224x3:float32``; a dimension written ``?``,
``-1`` or a name (``batch``) stays dynamic. Frontends compare the specs with the inputs the source model
declares and refuse one that cannot fit (unknown name, other rank, a fixed dimension or the dtype differing),
before any conversion runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
from onnxpress.irpasses.core.errors import DataError

Dim = int | str | None
"""A dimension: a size, a symbolic name, or None (dynamic, unnamed)."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[Dim, ...] | None
    """None: the rank is not given (the model's own shape is kept)."""
    dtype: np.dtype | None

    def text(self) -> str:
        shape = "x".join("?" if d is None else str(d) for d in self.shape) if self.shape is not None else "?"
        return f"{self.name}:{shape or 'scalar'}:{self.dtype.name if self.dtype is not None else '?'}"

    def fixed_shape(self, default: int = 1) -> tuple[int, ...]:
        """A concrete shape for generated samples: dynamic dimensions become ``default``."""
        return tuple(d if isinstance(d, int) else default for d in (self.shape or ()))


def _dim(text: str, spec: str) -> Dim:
    text = text.strip()
    if text in ("?", "-1", ""):
        return None
    if text.lstrip("-").isdigit():
        if int(text) < 0:
            raise DataError(f"bad input spec '{spec}': dimension {text} is negative (write ? for a dynamic one)")
        return int(text)
    if text.isidentifier():
        return text
    raise DataError(f"bad input spec '{spec}': dimension '{text}' is not a size, ? or a name")


def _dtype(text: str, spec: str) -> np.dtype | None:
    if text in ("", "?"):
        return None
    try:
        return np.dtype(text)
    except TypeError as err:
        raise DataError(f"bad input spec '{spec}': '{text}' is not a dtype (float32, int64, uint8, ...)") from err


def parse_input_spec(spec: str) -> InputSpec:
    """``NAME:SHAPE:DTYPE``. The name may hold colons (TensorFlow's ``serving_default_x:0``): the last two
    fields are the shape and the dtype. SHAPE is ``1x3x224x224`` (or ``batch,max_len`` with commas, for dimension
    names holding an x), ``?`` for any, ``scalar`` for rank 0."""
    name, sep, rest = spec.rpartition(":")
    name, sep2, shape_text = name.rpartition(":")
    if not sep or not sep2 or not name:
        raise DataError(f"bad input spec '{spec}': expected NAME:SHAPE:DTYPE, e.g. images:1x224x224x3:float32")
    dtype = _dtype(rest.strip(), spec)
    shape_text = shape_text.strip()
    if shape_text == "?":
        shape: tuple[Dim, ...] | None = None
    elif shape_text == "scalar":
        shape = ()
    else:
        shape = tuple(_dim(d, spec) for d in shape_text.split("," if "," in shape_text else "x"))
    return InputSpec(name, shape, dtype)


def input_specs(value: str | InputSpec | Iterable[str | InputSpec] | None) -> list[InputSpec]:
    """Specs from the API's ``inputs=``: one spec or several, as text or ``InputSpec``."""
    if value is None:
        return []
    items = [value] if isinstance(value, (str, InputSpec)) else list(value)
    specs = [v if isinstance(v, InputSpec) else parse_input_spec(str(v)) for v in items]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise DataError(f"input specs name an input twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return specs


def match_specs(given: Sequence[InputSpec], declared: Sequence[InputSpec], what: str) -> list[InputSpec]:
    """The model's inputs with the given specs applied. Refuses a spec that names no input, has another rank,
    changes a dimension the model fixes, or another dtype; a spec's dynamic dimension keeps the model's."""
    by_name = {d.name: d for d in declared}
    listing = ", ".join(d.text() for d in declared) or "none"
    merged = dict(by_name)
    for spec in given:
        model = by_name.get(spec.name)
        if model is None:
            raise DataError(f"input spec '{spec.text()}' names no input of {what}; its inputs: {listing}")
        if spec.dtype is not None and model.dtype is not None and spec.dtype != model.dtype:
            raise DataError(f"input spec '{spec.text()}' gives dtype {spec.dtype.name}, {what} takes "
                            f"{model.dtype.name} for '{spec.name}' ({model.text()})")
        shape = model.shape
        if spec.shape is not None:
            if model.shape is not None and len(spec.shape) != len(model.shape):
                raise DataError(f"input spec '{spec.text()}' has rank {len(spec.shape)}, {what} takes rank "
                                f"{len(model.shape)} for '{spec.name}' ({model.text()})")
            if model.shape is not None:
                for axis, (mine, theirs) in enumerate(zip(spec.shape, model.shape, strict=True)):
                    if isinstance(mine, int) and isinstance(theirs, int) and mine != theirs:
                        raise DataError(f"input spec '{spec.text()}' sets dimension {axis} to {mine}, {what} fixes it "
                                        f"at {theirs} ({model.text()})")
                shape = tuple(m if m is not None else t for m, t in zip(spec.shape, model.shape, strict=True))
            else:
                shape = spec.shape
        merged[spec.name] = InputSpec(spec.name, shape, spec.dtype or model.dtype)
    return [merged[d.name] for d in declared]
