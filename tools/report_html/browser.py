"""Open a report in headless Chromium (Debian's ``chromium``) and read back what the browser laid out: the page's
own script marks how many plots rendered with content, and a screenshot shows them. Used by the tests and to
make the README's screenshot. Name resolution is mapped to nothing, so a page that needed the network would
show it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from onnxpress.irpasses.core.errors import BackendUnavailableError

NO_NETWORK = "--host-resolver-rules=MAP * ~NOTFOUND"


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    binary = find_chromium()
    if binary is None:
        raise BackendUnavailableError("no Chromium found", hint="apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="onnxpress-chromium-") as profile:
        return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", NO_NETWORK,
                               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args],
                              capture_output=True, text=True, timeout=timeout)


def rendered_marks(page: Path, timeout: float = 60.0) -> dict[str, int]:
    """The page's ``data-plots*`` marks after load: plots in the page, visible ones, and visible ones laid out
    with a real size and drawn marks. Empty when the page's script did not run."""
    dom = _run(["--dump-dom", page.resolve().as_uri()], timeout).stdout
    body = re.search(r"<body([^>]*)>", dom)
    marks = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body.group(1))) if body else {}
    return {k: int(v) for k, v in marks.items()}


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1800, timeout: float = 60.0) -> Path:
    _run([f"--window-size={width},{height}", f"--screenshot={png.resolve()}", page.resolve().as_uri()], timeout)
    if not png.exists():
        raise BackendUnavailableError(f"Chromium wrote no screenshot of {page}")
    return png
