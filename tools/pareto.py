"""Pareto fronts of compression results: the points no other point beats on every objective at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

Objective = tuple[Callable[[Any], float], bool]
"""A value to read off a point, and whether larger is better."""


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on one (all objectives: larger is better)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def front(points: Sequence[T], objectives: Sequence[Objective]) -> list[T]:
    """The non-dominated points, in their given order (ties: equal points are all kept)."""
    scored = [[value(p) if larger else -value(p) for value, larger in objectives] for p in points]
    return [p for p, s in zip(points, scored, strict=True) if not any(dominates(o, s) for o in scored)]
