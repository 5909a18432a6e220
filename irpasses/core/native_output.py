"""Output that native code (C++ in TensorFlow, LiteRT, Ray's client) writes straight to file descriptor 2,
around Python's ``sys.stderr``: kept for the error message instead of reaching the user's terminal."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr() -> Iterator[list[str]]:
    """What is written to file descriptor 2 inside the block, kept (the list is filled on exit) rather than
    printed; a no-op where descriptor 2 cannot be duplicated."""
    kept: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:
        yield kept
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield kept
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept.extend(sink.read().decode(errors="replace").splitlines())
