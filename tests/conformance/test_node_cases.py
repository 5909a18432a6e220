"""ONNX's own node test cases: every case onnxruntime passes must still pass after our rewrites.

onnxruntime's own failures on the original models are checked against a committed list, so a newly
failing or newly passing case is noticed instead of silently skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from onnxpress.tools import conformance

pytestmark = pytest.mark.slow

KNOWN = Path(__file__).with_name("ort_known_failures.txt")


@pytest.fixture(scope="module")
def corpus() -> tuple[list, dict[str, str | None]]:
    cases = conformance.node_cases()
    return cases, conformance.ort_baseline(cases)


def _category(reason: str) -> str:
    return re.sub(r"\s+", " ", reason.split(":", 1)[0] if reason.startswith(("load", "run", "mismatch")) else reason)


def test_ort_failures_are_the_listed_ones(corpus) -> None:
    cases, baseline = corpus
    failing = {name: reason for name, reason in baseline.items() if reason}
    listed = {}
    for line in KNOWN.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, reason = line.partition("\t")
            listed[name] = reason
    assert len(cases) == 1884
    newly_failing = sorted(set(failing) - set(listed))
    newly_passing = sorted(set(listed) - set(failing))
    assert not newly_failing, f"onnxruntime now fails cases not listed in {KNOWN.name}: {newly_failing[:10]}"
    assert not newly_passing, f"onnxruntime now passes listed cases (remove them from {KNOWN.name}): {newly_passing[:10]}"


@pytest.mark.parametrize(
    ("pipeline", "target"),
    [(None, None), ("cleanup", None), ("optimize", None), ("optimize", "ort")],
    ids=["round-trip", "cleanup", "optimize", "optimize-for-ort"],
)
def test_rewrites_keep_every_ort_passing_case(corpus, pipeline: str | None, target: str | None) -> None:
    cases, baseline = corpus
    transform = conformance.pipeline_transform(pipeline, target) if pipeline else conformance.roundtrip
    outcomes = conformance.check_transform(cases, baseline, transform)
    broken = [f"{o.name}: {o.reason}" for o in outcomes if not o.ok]
    assert len(outcomes) == sum(1 for r in baseline.values() if r is None) > 1300
    assert not broken, f"{len(broken)}/{len(outcomes)} cases broken:\n" + "\n".join(broken[:20])
