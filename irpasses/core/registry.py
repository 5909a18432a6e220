"""Plug-in registry over Python entry points; built-in passes register exactly as a vendor's do.

Each entry point in a group (``onnxpress.passes``, ``onnxpress.backends``, ``onnxpress.frontends``,
``onnxpress.kernels``) resolves to a ``Plugin`` manifest of lazy ``"module:attr"`` references, so listing
names imports no pass code. A name registered twice is refused, naming both distributions.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from onnxpress.irpasses.core.errors import PipelineError, PluginError

API_VERSION = 1
GROUPS = ("onnxpress.passes", "onnxpress.backends", "onnxpress.frontends", "onnxpress.kernels")


@dataclasses.dataclass(frozen=True)
class Plugin:
    """What one distribution contributes. Values are ``"module:attr"`` strings, imported on first use."""

    api_version: int
    passes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    pipelines: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Named pipelines: name -> pipeline text, e.g. ``{"cleanup": "dead-code,topo-sort"}``."""
    backends: Mapping[str, str] = dataclasses.field(default_factory=dict)
    frontends: Mapping[str, str] = dataclasses.field(default_factory=dict)
    kernels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Entry:
    kind: str
    name: str
    target: Any
    """``"module:attr"`` text, or the loaded object."""
    origin: str
    """The distribution (or ``python``) that registered it."""


def _load_ref(ref: str, what: str, origin: str) -> Any:
    module_name, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except Exception as err:  # a vendor's broken import must name the vendor
        raise PluginError(f"{what} from '{origin}' could not be loaded from '{ref}': {type(err).__name__}: {err}") from err
    return obj


class Registry:
    """All plug-in contributions, discovered once from entry points (or registered from Python)."""

    KINDS = ("passes", "pipelines", "backends", "frontends", "kernels")
    SINGULAR = {"passes": "pass", "pipelines": "pipeline", "backends": "backend", "frontends": "frontend", "kernels": "kernel"}

    def __init__(self, discover: bool = True) -> None:
        self._entries: dict[str, dict[str, _Entry]] = {k: {} for k in self.KINDS}
        self.broken: list[str] = []
        if discover:
            self._discover()

    # ----- registration --------------------------------------------------------------------------
    def _add(self, kind: str, name: str, target: Any, origin: str) -> None:
        table = self._entries[kind]
        if name in table and table[name].origin != origin:
            raise PluginError(
                f"{self.SINGULAR[kind]} name '{name}' is registered twice: by '{table[name].origin}' and by '{origin}'",
                hint="uninstall one of the two packages, or ask its author to rename the pass",
            )
        if name in table:
            raise PluginError(f"{self.SINGULAR[kind]} name '{name}' is registered twice by '{origin}'")
        table[name] = _Entry(kind, name, target, origin)

    def add_plugin(self, plugin: Plugin, origin: str) -> None:
        if not isinstance(plugin, Plugin):
            raise PluginError(f"entry point of '{origin}' must resolve to onnxpress Plugin, got {type(plugin).__name__}")
        if plugin.api_version != API_VERSION:
            raise PluginError(
                f"plugin '{origin}' targets onnxpress plugin API {plugin.api_version}, this onnxpress provides {API_VERSION}",
                hint=f"install a version of '{origin}' built for plugin API {API_VERSION}",
            )
        for kind in self.KINDS:
            for name, ref in getattr(plugin, kind).items():
                if kind == "passes" and name in self._entries["pipelines"] or kind == "pipelines" and name in self._entries["passes"]:
                    other = (self._entries["pipelines"].get(name) or self._entries["passes"][name]).origin
                    raise PluginError(f"name '{name}' is used for a pass and a pipeline: by '{other}' and by '{origin}'")
                self._add(kind, name, ref, origin)

    def register_pass(self, cls: type, origin: str = "python") -> None:
        """Register a Pass class directly (tests, notebooks); same duplicate rules as entry points."""
        self._add("passes", cls.name, cls, origin)

    def _discover(self) -> None:
        seen: set[tuple[str, str]] = set()
        for group in GROUPS:
            for ep in metadata.entry_points(group=group):
                origin = ep.dist.name if ep.dist is not None else ep.value
                if (origin, ep.value) in seen:
                    continue  # one manifest may be listed under several groups
                seen.add((origin, ep.value))
                try:
                    plugin = ep.load()
                except Exception as err:
                    self.broken.append(f"{origin} ({ep.value}): {type(err).__name__}: {err}")
                    warnings.warn(f"onnxpress plugin '{origin}' failed to load: {err}", stacklevel=2)
                    continue
                self.add_plugin(plugin, origin)

    # ----- lookup --------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def origin(self, kind: str, name: str) -> str:
        return self._entries[kind][name].origin

    def pipeline_text(self, name: str) -> str | None:
        entry = self._entries["pipelines"].get(name)
        return None if entry is None else str(entry.target)

    def get(self, kind: str, name: str) -> Any:
        table = self._entries[kind]
        if name not in table:
            import difflib

            close = difflib.get_close_matches(name, list(table) + list(self._entries["pipelines"]), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "run `onnxpress passes` to list them"
            if self.broken:
                hint += "; plugins that failed to load: " + "; ".join(self.broken)
            raise PipelineError(f"unknown {self.SINGULAR[kind]} '{name}'", hint=hint)
        entry = table[name]
        if isinstance(entry.target, str):
            entry.target = _load_ref(entry.target, f"{self.SINGULAR[kind]} '{name}'", entry.origin)
        return entry.target

    def get_pass(self, name: str) -> type:
        from onnxpress.irpasses.core.pass_base import Pass

        cls = self.get("passes", name)
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise PluginError(f"pass '{name}' from '{self.origin('passes', name)}' is not an onnxpress Pass subclass")
        if cls.name != name:
            raise PluginError(f"pass registered as '{name}' by '{self.origin('passes', name)}' calls itself '{cls.name}'")
        return cls


_DEFAULT: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry, discovered on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry()
    return _DEFAULT


def reset_default_registry() -> None:
    """Forget discovered plug-ins (after installing a package at run time, or in tests)."""
    global _DEFAULT
    _DEFAULT = None
