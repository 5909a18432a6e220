"""Pipelines as text (``cleanup,qdq{bits=8,calib=entropy}``) or as a YAML/TOML recipe file.

Both forms parse to a list of ``PassSpec`` and are resolved against the registry, expanding named
pipelines, into pass instances.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from onnxpress.irpasses.core.errors import PassOptionError, PipelineError
from onnxpress.irpasses.core.pass_base import Pass
from onnxpress.irpasses.core.registry import Registry, default_registry

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class PassSpec:
    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    children: list[PassSpec] | None = None
    """For groups such as ``fixpoint(...)``: the enclosed pipeline."""


def parse_pipeline(text: str) -> list[PassSpec]:
    """Parse ``name{key=value,...},name,...``; values may be quoted or bracketed lists ``[a;b]``;
    ``fixpoint{max=4}(a,b)`` encloses a group."""
    specs, pos = _parse_sequence(text, 0, nested=False)
    return specs


def _parse_sequence(text: str, pos: int, nested: bool) -> tuple[list[PassSpec], int]:
    specs: list[PassSpec] = []
    n = len(text)

    def fail(msg: str) -> PipelineError:
        return PipelineError(f"bad pipeline at column {pos + 1}: {msg}\n  {text}\n  {' ' * pos}^")

    def skip_ws() -> None:
        nonlocal pos
        while pos < n and text[pos].isspace():
            pos += 1

    while True:
        skip_ws()
        m = _NAME.match(text, pos)
        if not m:
            raise fail("expected a pass or pipeline name")
        name, pos = m.group(0), m.end()
        options: dict[str, Any] = {}
        skip_ws()
        if pos < n and text[pos] == "{":
            pos += 1
            while True:
                skip_ws()
                if pos < n and text[pos] == "}":
                    pos += 1
                    break
                km = _KEY.match(text, pos)
                if not km:
                    raise fail(f"expected an option name inside '{name}{{...}}'")
                key, pos = km.group(0), km.end()
                skip_ws()
                if pos >= n or text[pos] != "=":
                    raise fail(f"expected '=' after option '{key}'")
                pos += 1
                skip_ws()
                value, pos = _read_value(text, pos, fail)
                if key in options:
                    raise fail(f"option '{key}' given twice")
                options[key] = value
                skip_ws()
                if pos < n and text[pos] == ",":
                    pos += 1
                elif pos < n and text[pos] == "}":
                    pos += 1
                    break
                else:
                    raise fail("expected ',' or '}'")
        children = None
        skip_ws()
        if pos < n and text[pos] == "(":
            children, pos = _parse_sequence(text, pos + 1, nested=True)
        specs.append(PassSpec(name, options, children))
        skip_ws()
        if pos >= n:
            if nested:
                raise fail("unclosed '(' in the pipeline")
            return specs, pos
        if nested and text[pos] == ")":
            return specs, pos + 1
        if text[pos] != ",":
            raise fail("expected ',' between passes")
        pos += 1


def _read_value(text: str, pos: int, fail: Any) -> tuple[str, int]:
    if pos < len(text) and text[pos] in "\"'":
        quote = text[pos]
        end = text.find(quote, pos + 1)
        if end < 0:
            raise fail("unterminated quoted value")
        return text[pos + 1 : end], end + 1
    if pos < len(text) and text[pos] == "[":
        quote = ""
        for end in range(pos + 1, len(text)):  # items may be quoted: "]" or ";" inside quotes do not count
            ch = text[end]
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "\"'":
                quote = ch
            elif ch == "]":
                return text[pos : end + 1], end + 1
        raise fail("unterminated list value")
    start = pos
    while pos < len(text) and text[pos] not in ",}":
        pos += 1
    value = text[start:pos].strip()
    if not value:
        raise fail("empty option value")
    return value, pos


def load_recipe(path: str | os.PathLike[str]) -> list[PassSpec]:
    """Read a recipe: a YAML or TOML file with a ``pipeline`` list.

    Items are a name (``cleanup``), a one-key mapping (``qdq: {bits: 8}``), or a mapping with ``name``
    and the options beside it (TOML: ``[[pipeline]] name = "qdq"  bits = 8``).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise PipelineError(f"cannot read recipe '{p}': {err.strerror}") from err
    try:
        if p.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(raw.decode())
        else:
            import yaml

            data = yaml.safe_load(raw)
    except Exception as err:
        raise PipelineError(f"recipe '{p}' is not valid {p.suffix.lstrip('.').upper() or 'YAML'}: {err}") from err
    items = data.get("pipeline") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise PipelineError(f"recipe '{p}' must contain a non-empty list named 'pipeline'")
    specs = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            specs.extend(parse_pipeline(item))
        elif isinstance(item, dict) and "name" in item:
            opts = dict(item.get("options") or {k: v for k, v in item.items() if k != "name"})
            specs.append(PassSpec(str(item["name"]), opts))
        elif isinstance(item, dict) and len(item) == 1:
            ((name, opts),) = item.items()
            if opts is not None and not isinstance(opts, dict):
                raise PipelineError(f"recipe '{p}' item {i + 1}: options of '{name}' must be a mapping")
            specs.append(PassSpec(str(name), dict(opts or {})))
        else:
            raise PipelineError(f"recipe '{p}' item {i + 1}: expected a pass name or a mapping, got {item!r}")
    return specs


def specs_from(pipeline: str | os.PathLike[str] | list[PassSpec]) -> list[PassSpec]:
    """Accept pipeline text, a recipe path (.yaml/.yml/.toml), or specs."""
    if isinstance(pipeline, list):
        return pipeline
    text = os.fspath(pipeline)
    if text.lower().endswith((".yaml", ".yml", ".toml")):
        return load_recipe(text)
    return parse_pipeline(text)


def build_passes(
    pipeline: str | os.PathLike[str] | list[PassSpec], registry: Registry | None = None, _depth: int = 0
) -> list[Pass]:
    """Resolve names to pass instances, expanding named pipelines; options are type-checked here."""
    registry = registry or default_registry()
    passes: list[Pass] = []
    for spec in specs_from(pipeline):
        if spec.children is not None:
            if spec.name != "fixpoint":
                raise PipelineError(f"'{spec.name}(...)': only 'fixpoint' encloses a group of passes")
            from onnxpress.irpasses.core.fixpoint import FixedPoint

            group = FixedPoint.from_options(spec.options)
            assert isinstance(group, FixedPoint)
            group.passes = build_passes(spec.children, registry, _depth + 1)
            passes.append(group)
            continue
        expansion = registry.pipeline_text(spec.name)
        if expansion is not None:
            if spec.options:
                raise PassOptionError(f"'{spec.name}' is a named pipeline and takes no options (got {sorted(spec.options)})")
            if _depth > 8:
                raise PipelineError(f"named pipeline '{spec.name}' expands recursively")
            passes.extend(build_passes(expansion, registry, _depth + 1))
            continue
        cls = registry.get_pass(spec.name)
        passes.append(cls.from_options(spec.options))
    return passes


def pipeline_to_text(passes: list[Pass]) -> str:
    return ",".join(p.spec() for p in passes)
