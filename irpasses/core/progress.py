"""Progress reporting for long work: a rich bar on a terminal, silence otherwise."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Protocol


class ProgressTask(Protocol):
    def advance(self, amount: int = 1) -> None: ...


class _Silent:
    def advance(self, amount: int = 1) -> None:
        pass


class _RichTask:
    def __init__(self, progress: object, task_id: object) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task_id, amount)  # type: ignore[attr-defined]


@contextlib.contextmanager
def progress(description: str, total: int | None, enabled: bool | None = None) -> Iterator[ProgressTask]:
    """Show a progress bar when stderr is a terminal (or ``enabled`` is True) and rich is installed."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _Silent()
        return
    try:
        from rich.progress import Progress
    except ImportError:
        yield _Silent()
        return
    with Progress(transient=True) as bar:
        yield _RichTask(bar, bar.add_task(description, total=total))
