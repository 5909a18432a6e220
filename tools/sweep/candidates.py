"""Sweep candidates: every pipeline in ``--pipelines`` crossed with the ``--grid`` options that apply to it.

A candidate is identified by its fully expanded recipe text, so ``int8`` and the passes it expands to are the
same candidate, and its id (a hash of that text) names its folder in the sweep directory. Everything here is
resolved and checked before any model is read: an unknown pass, pipeline or option fails the sweep at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Any

from onnxpress.irpasses.core.errors import PassOptionError, PipelineError
from onnxpress.irpasses.core.pass_base import Pass
from onnxpress.irpasses.core.pipeline_text import build_passes, pipeline_to_text
from onnxpress.irpasses.core.registry import Registry, default_registry


@dataclasses.dataclass(frozen=True)
class GridAxis:
    """``qdq.calibrator=percentile,entropy``: one pass option and the values it takes."""

    pass_name: str
    option: str
    values: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.pass_name}.{self.option}"


@dataclasses.dataclass(frozen=True)
class Candidate:
    label: str
    """What the user wrote, plus the grid values: ``int8 [qdq.calibrator=entropy]``."""
    recipe: str
    """The expanded pipeline text: ``onnxpress opt -p RECIPE`` reproduces the candidate."""
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return hashlib.sha256(self.recipe.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "recipe": self.recipe, "settings": dict(self.settings)}


def split_top_level(text: str, separator: str) -> list[str]:
    """Split at ``separator`` outside braces, brackets, parentheses and quotes (``[a;b]`` lists stay whole)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        elif ch == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_grid(entries: list[str] | None, registry: Registry) -> list[GridAxis]:
    """Read ``PASS.OPTION=v1,v2`` entries, checking that the pass and the option exist and each value converts."""
    axes: list[GridAxis] = []
    for entry in entries or []:
        head, sep, values = entry.partition("=")
        pass_name, dot, option = head.strip().partition(".")
        if not sep or not dot or not option or not values.strip():
            raise PipelineError(f"--grid {entry!r}: expected PASS.OPTION=VALUE,VALUE (e.g. qdq.calibrator=percentile,entropy)")
        cls = registry.get_pass(pass_name)  # unknown pass: the registry's own error, with the known names
        options = tuple(split_top_level(values, ","))
        for value in options:
            cls.from_options({option: value})  # unknown option or bad value: PassOptionError naming both
        if any(a.key == f"{pass_name}.{option}" for a in axes):
            raise PipelineError(f"--grid names {pass_name}.{option} twice")
        axes.append(GridAxis(pass_name, option, options))
    return axes


def _with_option(passes: list[Pass], axis: GridAxis, value: str) -> int:
    """Set one option on every pass of that name (inside fixpoint groups too); returns how many took it."""
    taken = 0
    for i, p in enumerate(passes):
        inner = getattr(p, "passes", None)
        if isinstance(inner, list) and inner and isinstance(inner[0], Pass):
            taken += _with_option(inner, axis, value)
        if p.name == axis.pass_name:
            parsed = getattr(type(p).from_options({axis.option: value}), axis.option)
            passes[i] = type(p)(**{**p.options(), axis.option: parsed})
            taken += 1
    return taken


def expand(pipelines: str, grid: list[str] | None = None, registry: Registry | None = None) -> list[Candidate]:
    """All candidates, in the order written, duplicates (same recipe) dropped. Fails before any work on an unknown
    pipeline or pass, a bad option, or a grid axis that no pipeline uses."""
    registry = registry or default_registry()
    texts = split_top_level(pipelines, ";")
    if not texts:
        raise PipelineError("--pipelines is empty: give pipelines separated by ';', e.g. \"int8;auto;w4\"")
    axes = parse_grid(grid, registry)
    used: set[str] = set()
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for text in texts:
        try:
            base = build_passes(text, registry)
        except PipelineError as err:
            raise type(err)(f"pipeline {text!r} in --pipelines: {err.message}", hint=err.hint) from err
        applicable = [a for a in axes if _with_option(build_passes(text, registry), a, a.values[0])]
        used.update(a.key for a in applicable)
        for combo in itertools.product(*(a.values for a in applicable)):
            passes = list(base) if not combo else build_passes(text, registry)
            for axis, value in zip(applicable, combo, strict=True):
                _with_option(passes, axis, value)
            settings = tuple((a.key, v) for a, v in zip(applicable, combo, strict=True))
            label = text + (" [" + ", ".join(f"{k}={v}" for k, v in settings) + "]" if settings else "")
            candidate = Candidate(label, pipeline_to_text(passes), settings)
            if candidate.recipe not in seen:
                seen.add(candidate.recipe)
                candidates.append(candidate)
    unused = [a.key for a in axes if a.key not in used]
    if unused:
        raise PassOptionError(f"--grid {', '.join(unused)}: no pipeline in --pipelines runs that pass",
                              hint="the grid varies an option of a pass inside the pipelines (e.g. qdq inside int8)")
    return candidates


LAYER_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
"""The layers a per-layer sweep keeps out one at a time: those the lossy passes act on."""


def per_layer(pipeline: str, layers: Sequence[str], registry: Registry | None = None) -> list[Candidate]:
    """Leave-one-out sensitivity as sweep candidates: the pipeline itself, then once per layer with that layer in
    the ``exclude`` list of every pass of the pipeline that takes one. The fidelity each recovers is that layer's
    share of the damage, and the candidates spread over workers like any others."""
    registry = registry or default_registry()
    if len(split_top_level(pipeline, ";")) != 1:
        raise PipelineError("--per-layer takes one pipeline in --pipelines (the one whose layers are scored)")
    base = build_passes(pipeline, registry)
    if not any("exclude" in p.options() for p in _flat(base)):
        raise PipelineError(f"--per-layer: no pass in {pipeline!r} takes an exclude list, so no layer can be kept out of it",
                            hint="use a pipeline with qdq, dynamic-quant, cluster, prune or lowrank")
    if not layers:
        raise PipelineError(f"--per-layer: the model has no {'/'.join(LAYER_OPS)} layer to score")
    candidates = [Candidate(pipeline, pipeline_to_text(base))]
    for layer in layers:
        passes = build_passes(pipeline, registry)
        _exclude(passes, re.escape(layer))
        candidates.append(Candidate(f"keep {layer}", pipeline_to_text(passes), (("keep", layer),)))
    return candidates


def _flat(passes: list[Pass]) -> list[Pass]:
    out: list[Pass] = []
    for p in passes:
        inner = getattr(p, "passes", None)
        out += _flat(inner) if isinstance(inner, list) and inner and isinstance(inner[0], Pass) else [p]
    return out


def _exclude(passes: list[Pass], pattern: str) -> None:
    for i, p in enumerate(passes):
        inner = getattr(p, "passes", None)
        if isinstance(inner, list) and inner and isinstance(inner[0], Pass):
            _exclude(inner, pattern)
        elif "exclude" in p.options():
            options = p.options()
            passes[i] = type(p)(**{**options, "exclude": [*(options["exclude"] or []), pattern]})
