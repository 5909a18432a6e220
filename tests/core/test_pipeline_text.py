from __future__ import annotations

import dataclasses
from typing import Literal

import pytest
from onnxpress.irpasses.core import (
    Pass,
    PassOptionError,
    PipelineError,
    Registry,
    build_passes,
    parse_pipeline,
)
from onnxpress.irpasses.core.pipeline_text import (
    PassSpec,
    load_recipe,
    pipeline_to_text,
)


@dataclasses.dataclass
class Quantize(Pass):
    """A pass with typed options, for parsing tests."""

    name = "fake-qdq"
    bits: int = 8
    calib: Literal["minmax", "entropy"] = "minmax"
    per_channel: bool = False
    exclude: list[str] = dataclasses.field(default_factory=list)
    alpha: float = 0.5

    def run(self, model, ctx):  # pragma: no cover - never run
        return self.result(model, False)


@pytest.fixture()
def registry() -> Registry:
    reg = Registry()
    reg.register_pass(Quantize, origin="tests")
    return reg


def test_parses_names_and_options() -> None:
    specs = parse_pipeline("cleanup, fake-qdq{bits=4, calib=entropy ,exclude=[a;b]},dead-code")
    assert specs == [
        PassSpec("cleanup"),
        PassSpec("fake-qdq", {"bits": "4", "calib": "entropy", "exclude": "[a;b]"}),
        PassSpec("dead-code"),
    ]


def test_quoted_values_keep_commas() -> None:
    (spec,) = parse_pipeline('graphsurgeon{fn="a/b.py:fix,me"}')
    assert spec.options == {"fn": "a/b.py:fix,me"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a pass or pipeline name"),
        ("a{bits}", "expected '='"),
        ("a{bits=}", "empty option value"),
        ("a b", "expected ',' between passes"),
        ("a{x=1,x=2}", "given twice"),
        ("a{x=1", "expected ',' or '}'"),
    ],
)
def test_malformed_text_points_at_the_column(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message) as info:
        parse_pipeline(text)
    assert "^" in info.value.message


def test_options_are_converted_to_declared_types(registry: Registry) -> None:
    (p,) = build_passes("fake-qdq{bits=4,calib=entropy,per_channel=true,exclude=[x;y],alpha=0.25}", registry)
    assert isinstance(p, Quantize)
    assert (p.bits, p.calib, p.per_channel, p.exclude, p.alpha) == (4, "entropy", True, ["x", "y"], 0.25)
    assert p.spec() == "fake-qdq{bits=4,calib=entropy,per_channel=true,exclude=[x;y],alpha=0.25}"
    assert build_passes(p.spec(), registry)[0] == p  # round trip through text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fake-qdq{bits=four}", "option 'bits' of pass 'fake-qdq': expected int, got 'four'"),
        ("fake-qdq{calib=kl}", "expected one of minmax, entropy, got 'kl'"),
        ("fake-qdq{per_channel=maybe}", "expected true or false"),
        ("fake-qdq{bitz=4}", "pass 'fake-qdq' has no option 'bitz' \\(its options: alpha, bits, calib, exclude, per_channel\\)"),
    ],
)
def test_bad_options_name_the_pass_and_option(registry: Registry, text: str, message: str) -> None:
    with pytest.raises(PassOptionError, match=message):
        build_passes(text, registry)


def test_unknown_pass_suggests_close_names(registry: Registry) -> None:
    with pytest.raises(PipelineError, match="unknown pass 'dead-cod'") as info:
        build_passes("dead-cod", registry)
    assert "dead-code" in (info.value.hint or "")


def test_named_pipelines_expand_and_refuse_options(registry: Registry) -> None:
    names = [p.name for p in build_passes("cleanup", registry)]
    assert names[0] == "lift-constants" and names[-1] == "topo-sort"
    with pytest.raises(PassOptionError, match="named pipeline"):
        build_passes("cleanup{x=1}", registry)


def test_yaml_and_toml_recipes_match_text(tmp_path, registry: Registry) -> None:
    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text("pipeline:\n  - cleanup\n  - fake-qdq: {bits: 4, calib: entropy}\n  - name: fake-qdq\n    exclude: [a, b]\n")
    toml_file = tmp_path / "r.toml"
    toml_file.write_text('pipeline = ["cleanup", {name = "fake-qdq", bits = 4, calib = "entropy"}, {name = "fake-qdq", exclude = ["a", "b"]}]\n')
    text = "cleanup,fake-qdq{bits=4,calib=entropy},fake-qdq{exclude=[a;b]}"
    expected = pipeline_to_text(build_passes(text, registry))
    assert pipeline_to_text(build_passes(str(yaml_file), registry)) == expected
    assert pipeline_to_text(build_passes(str(toml_file), registry)) == expected


def test_bad_recipe_is_reported(tmp_path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("steps: [cleanup]\n")
    with pytest.raises(PipelineError, match="non-empty list named 'pipeline'"):
        load_recipe(bad)
    with pytest.raises(PipelineError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_list_items_with_separators_round_trip() -> None:
    """Regexes over node names hold ';', ']' and quotes: the pipeline text of a pass reads back as the same pass."""
    from onnxpress.irpasses.core.pipeline_text import build_passes, pipeline_to_text

    passes = build_passes("qdq")
    passes[0].exclude = [r"a\[b\]\+c;d", 'x"y', "plain"]
    text = pipeline_to_text(passes)
    again = build_passes(text)
    assert again[0].exclude == [r"a\[b\]\+c;d", 'x"y', "plain"] and pipeline_to_text(again) == text
