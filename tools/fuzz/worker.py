"""The worker side: run one fuzz case through every entry point and classify what happened.

Runs in a child process so that a hang or a crash of native code (protobuf, onnxruntime) is seen by the
parent instead of taking the whole run down.
"""

from __future__ import annotations

import contextlib
import io
import logging
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

OK, REFUSED, INTERNAL, LEAK = "ok", "refused", "internal", "leak"


class _Counter(logging.Handler):
    """Stands in for logging.lastResort: a record reaching it would have been printed to the terminal."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}"[:300])


STRAY = _Counter()


def _stage(fn: Callable[[], Any]) -> tuple[str, str, Any]:
    """(status, detail, value) of one call: OnnxpressError with exit 2 is a refusal, with exit 1 an internal
    failure, anything else a leak."""
    from onnxpress.irpasses.core.errors import OnnxpressError

    try:
        return OK, "", fn()
    except OnnxpressError as err:
        status = REFUSED if err.exit_code == 2 else INTERNAL
        return status, f"{type(err).__name__}: {err.message}", None
    except Exception as err:
        return LEAK, f"{type(err).__name__}: {err}\n{traceback.format_exc()}", None


def _cli(argv: list[str]) -> tuple[str, str, Any]:
    from onnxpress.tools import cli

    out, err = io.StringIO(), io.StringIO()
    shown = warnings.showwarning
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status, detail, rc = _stage(lambda: cli.main(argv))
    finally:
        warnings.showwarning = shown
    text = err.getvalue().strip()
    if status != OK:
        return status, detail, rc
    if rc in (0, 3):
        return OK, "", rc
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    if rc == 2 and len(errors) == 1:
        return REFUSED, errors[0], rc
    return (LEAK if "internal error" in text else INTERNAL), f"exit {rc}: {text[-1500:]}", rc


@contextlib.contextmanager
def _captured() -> Iterator[tuple[list[warnings.WarningMessage], io.StringIO]]:
    """Every warning (recorded) and everything printed (kept) while a case runs: a print is a finding."""
    stray = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stray), contextlib.redirect_stderr(stray):
        warnings.simplefilter("always")
        yield caught, stray


def check_model(data: bytes, folder: Path) -> dict[str, Any]:
    """Load, cleanup, optimize, inspect and compare one (possibly broken) model file."""
    import onnxpress

    path = folder / "case.onnx"
    path.write_bytes(data)
    stages: dict[str, tuple[str, str]] = {}
    with _captured() as (caught, stray):
        status, detail, model = _stage(lambda: onnxpress.load(data))
        stages["load"] = (status, detail)
        if status == OK:
            stages["cleanup"] = _stage(lambda: onnxpress.optimize(model, "cleanup", verify="off"))[:2]
            stages["optimize"] = _stage(lambda: onnxpress.optimize(onnxpress.load(data), "optimize", verify="off"))[:2]
    stages["inspect"] = _cli(["inspect", str(path)])[:2]
    if stages["load"][0] == OK:
        stages["compare"] = _cli(["compare", str(path), str(path)])[:2]
    return _verdict(stages, [str(w.message)[:300] for w in caught], stray.getvalue())


def check_samples(data: bytes, model_path: Path, folder: Path) -> dict[str, Any]:
    """Read a (possibly broken) .npz as sample data for ``model_path``, in Python and through the CLI."""
    import onnxpress
    from onnxpress.frontends.sample_data import NpzSamples, validated

    path = folder / "case.npz"
    path.write_bytes(data)
    stages: dict[str, tuple[str, str]] = {}
    with _captured() as (caught, stray):
        model = onnxpress.load(model_path)
        stages["read"] = _stage(lambda: sum(1 for _ in validated(NpzSamples(path), model)))[:2]
    stages["compare"] = _cli(["compare", str(model_path), str(model_path), "--inputs", str(path)])[:2]
    return _verdict(stages, [str(w.message)[:300] for w in caught], stray.getvalue())


def _verdict(stages: dict[str, tuple[str, str]], warned: list[str], stray: str) -> dict[str, Any]:
    statuses = [s for s, _ in stages.values()]
    first = next(iter(stages.values()))  # the verdict on the input: the loader's (Python) or the reader's (samples)
    logged = list(STRAY.messages)
    STRAY.messages.clear()
    if LEAK in statuses:
        verdict = LEAK
    elif INTERNAL in statuses:
        verdict = INTERNAL
    elif stray.strip() or logged:
        verdict = "stray-output"
    elif first[0] == REFUSED:
        verdict = REFUSED
    else:
        verdict = "warned" if warned else "accepted"
    return {"verdict": verdict, "stages": stages, "warnings": warned[:5], "stray": (stray.strip()[:500], logged[:5]), "refusal": first[1]}


def serve(conn: Any, memory_limit_gib: float) -> None:
    """Answer cases sent over ``conn`` until it closes: ("model", bytes) or ("samples", bytes, model path)."""
    import resource
    import tempfile

    if memory_limit_gib:
        limit = int(memory_limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.lastResort = STRAY
    import onnxpress  # noqa: F401  (imported before "ready", so the first case's time limit is the case's)
    from onnxpress.tools import cli  # noqa: F401

    conn.send("ready")
    with tempfile.TemporaryDirectory(prefix="onnxpress-fuzz-") as tmp:
        folder = Path(tmp)
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message[0] == "model":
                conn.send(check_model(message[1], folder))
            else:
                conn.send(check_samples(message[1], Path(message[2]), folder))
