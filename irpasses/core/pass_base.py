"""The pass contract: a named, option-carrying, in-place rewrite of an onnx-ir model.

Subclasses are dataclasses whose fields are the pass options (``qdq{bits=4}`` sets ``bits``). They declare
``needs`` (properties that must hold before), ``provides`` (properties they establish) and ``keeps``
(properties and analyses they leave valid). Because ``Pass`` is an onnx-ir ``InPlacePass``, our passes also
run under onnx-ir's own ``Sequential``/``PassManager``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import PassOptionError
from onnxpress.irpasses.core.properties import Property

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclasses.dataclass
class PassResult(ir.passes.PassResult):
    """onnx-ir's result plus what the pass preserved and counters for the report."""

    keeps: frozenset[Any] | None = None
    """None means everything is preserved (implied when ``modified`` is False)."""
    stats: dict[str, int] = dataclasses.field(default_factory=dict)


class Pass(ir.passes.InPlacePass):
    """Base of every onnxpress pass. Subclasses must be ``@dataclasses.dataclass`` and set ``name``."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[Property]] = frozenset()
    provides: ClassVar[frozenset[Property]] = frozenset()
    keeps: ClassVar[frozenset[Any]] = frozenset()
    """Properties and Analysis classes this pass leaves valid when it modifies the model."""
    required: ClassVar[bool] = True
    lossy: ClassVar[bool] = False
    """True for intended approximations (quantization): the numeric check then judges by cosine similarity."""
    """False: an optimization that bisection may skip without breaking the pipeline."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is not None and not _NAME_RE.match(name):
            raise TypeError(f"pass name {name!r} of {cls.__qualname__} must be kebab-case")

    # ----- running -------------------------------------------------------------------------------
    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__qualname__} must implement run(model, ctx)")

    def requires(self, model: ir.Model) -> None:
        """onnx-ir precondition hook: check the needs that have a cheap check (the manager plans the rest)."""
        for prop in self.needs:
            if prop.holds is not None and not prop.holds(model):
                raise ir.passes.PreconditionError(f"pass '{self.name}' needs '{prop}' ({prop.doc})")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """onnx-ir entry point: run with a fresh context, so plain onnx-ir pipelines can use our passes."""
        return self.run(model, PassContext())

    def result(self, model: ir.Model, modified: bool, **stats: int) -> PassResult:
        """Build a result that keeps what the class declares."""
        return PassResult(model=model, modified=modified, keeps=None if not modified else self.keeps, stats=dict(stats))

    # ----- description -----------------------------------------------------------------------------
    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def option_specs(cls) -> list[dict[str, str]]:
        """Options with their type and default, for ``onnxpress passes``."""
        specs = []
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
            if not field.init or field.metadata.get("python_only"):
                continue
            default = field.default if field.default is not dataclasses.MISSING else None
            specs.append({"name": field.name, "type": _type_name(hints.get(field.name, str)), "default": repr(default)})
        return specs

    def options(self) -> dict[str, Any]:
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init and not f.metadata.get("python_only")}

    def spec(self) -> str:
        """The pipeline text that recreates this pass (used by reproducers and reports)."""
        defaults = {
            f.name: f.default
            for f in (dataclasses.fields(self) if dataclasses.is_dataclass(self) else ())
            if f.default is not dataclasses.MISSING
        }
        changed = {k: v for k, v in self.options().items() if defaults.get(k, dataclasses.MISSING) != v}
        if not changed:
            return self.name
        return self.name + "{" + ",".join(f"{k}={_format_value(v)}" for k, v in changed.items()) + "}"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Pass:
        """Instantiate from text or recipe options, converting and checking every value."""
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("python_only")} if dataclasses.is_dataclass(cls) else {}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, raw in options.items():
            if key not in fields:
                known = ", ".join(sorted(fields)) or "none"
                raise PassOptionError(f"pass '{cls.name}' has no option '{key}' (its options: {known})")
            kwargs[key] = _convert(raw, hints.get(key, str), f"option '{key}' of pass '{cls.name}'")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise PassOptionError(f"pass '{cls.name}': {err}") from err

    def __str__(self) -> str:
        return self.spec()


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_name(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


_SPECIAL = set(",;[]{}()\"'")


def _format_value(value: Any) -> str:
    """Pipeline text for an option value that reads back as the same value: a text holding a separator or a
    bracket (a regex over node names, say) is quoted."""
    if isinstance(value, (list, tuple)):
        return "[" + ";".join(_format_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if isinstance(value, str) and (_SPECIAL & set(text) or text != text.strip()):
        return f"'{text}'" if '"' in text else f'"{text}"'
    return text


def split_list_items(text: str) -> list[str]:
    """``a;"b;c";d`` -> the items, separators inside quotes kept."""
    items, quote, start = [], "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == ";":
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _unquote(item: str) -> str:
    return item[1:-1] if len(item) >= 2 and item[0] == item[-1] and item[0] in "\"'" else item


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(raw: Any, tp: Any, what: str) -> Any:
    """Convert ``raw`` (text from a pipeline, or a YAML/TOML value) to the declared option type."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(raw, arg, what)
            except PassOptionError:
                continue
        raise PassOptionError(f"{what}: expected {_type_name(tp)}, got {raw!r}")
    if origin is Literal:
        choices = get_args(tp)
        for choice in choices:
            if raw == choice or (isinstance(raw, str) and str(choice) == raw):
                return choice
        raise PassOptionError(f"{what}: expected one of {', '.join(map(str, choices))}, got {raw!r}")
    if origin in (list, tuple):
        (item,) = get_args(tp)[:1]
        if isinstance(raw, str):
            text = raw.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            items: list[Any] = [_unquote(p) for p in split_list_items(text)]
        elif isinstance(raw, (list, tuple)):
            items = list(raw)
        else:
            raise PassOptionError(f"{what}: expected a list, got {raw!r}")
        converted = [_convert(i, item, what) for i in items]
        return tuple(converted) if origin is tuple else converted
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise PassOptionError(f"{what}: expected true or false, got {raw!r}")
    if tp in (int, float):
        if isinstance(raw, bool):
            raise PassOptionError(f"{what}: expected {tp.__name__}, got {raw!r}")
        try:
            value = tp(raw)
        except (TypeError, ValueError) as err:
            raise PassOptionError(f"{what}: expected {tp.__name__}, got {raw!r}") from err
        if tp is int and isinstance(raw, float) and raw != int(raw):
            raise PassOptionError(f"{what}: expected int, got {raw!r}")
        return value
    if tp is str:
        if isinstance(raw, (dict, list)):
            raise PassOptionError(f"{what}: expected text, got {raw!r}")
        return str(raw)
    return raw
