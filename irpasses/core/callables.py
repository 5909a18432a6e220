"""User code named in an option: ``package.module:function`` or ``path/to/script.py:function``.

Naming code in an option (a graphsurgeon rewrite, a task metric in a fidelity target) is the user's choice to run
it; whatever goes wrong loading it is their input's problem, said in one line that names the option.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from onnxpress.irpasses.core.errors import PassOptionError


def resolve_callable(ref: str, what: str) -> Callable[..., Any]:
    """The function ``ref`` names; ``what`` (e.g. "graphsurgeon fn='x'") starts every error message."""
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise PassOptionError(f"{what}: expected 'module:function' or 'script.py:function'")
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"onnxpress_user_{abs(hash(target))}", target)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {target}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except Exception as err:  # the user's module failing to import, for any reason
        raise PassOptionError(f"{what}: module {target!r} cannot be imported ({type(err).__name__}: {err})",
                              hint="it must be importable from this Python (PYTHONPATH), or a path to a .py file") from err
    found = getattr(module, attr, None)
    if found is None:
        raise PassOptionError(f"{what}: {target} has no function {attr!r}")
    if not callable(found):
        raise PassOptionError(f"{what}: {target}:{attr} is not callable")
    return found
