"""The sweep directory: what the sweep was run on, and one folder per candidate with its results.

Layout::

    DIR/sweep.json                 model and data fingerprints (a rerun on another model is refused)
    DIR/reference.npz              the original model's outputs on the eval data, computed once
    DIR/candidates/ID/result.json  deterministic: size, fidelity, status (the same bytes from any run)
    DIR/candidates/ID/report.json  the pass manager's report (timings, memory: differ between runs)
    DIR/candidates/ID/measure.json latency and transform time, measured
    DIR/candidates/ID/model.onnx   the compressed model
    DIR/results.json, DIR/report.html

Every file is written atomically, so a sweep killed at any point leaves only whole results; a rerun treats
a candidate as done when its ``result.json`` exists (crashes and timeouts are not stored, so they run again).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from onnxpress.backends.base import write_atomic
from onnxpress.irpasses.core.errors import DataError

FORMAT = "onnxpress-sweep/1"


def file_digest(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files in name order (a folder of .npz samples)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with f.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def dumps(payload: Any) -> str:
    """The one JSON spelling results use, so equal results are equal bytes."""
    return json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n"


class SweepDir:
    def __init__(self, root: str | Path, identity: dict[str, Any]) -> None:
        self.root = Path(root)
        self.identity = {"format": FORMAT, **identity}

    def check(self) -> None:
        """Refuse a directory holding a sweep of another model or other data, or anything else, before any work."""
        manifest = self.root / "sweep.json"
        if manifest.exists():
            try:
                held = json.loads(manifest.read_text())
            except (OSError, ValueError) as err:
                raise DataError(f"{manifest}: unreadable sweep manifest ({err})", hint="use a new -o DIR") from err
            for key, value in self.identity.items():
                if held.get(key) != value:
                    what = {"model_sha256": "another model", "format": "another sweep format"}.get(key, f"another {key}")
                    raise DataError(
                        f"{self.root} holds the results of {what} ({key} {str(held.get(key))[:16]}, "
                        f"here {str(value)[:16]}): refusing to mix them",
                        hint="give a new -o DIR, or remove the old one",
                    )
        elif self.root.exists() and any(self.root.iterdir()):
            raise DataError(f"{self.root} is not empty and is not a sweep directory (no sweep.json)", hint="give a new or empty -o DIR")

    def open(self) -> None:
        """Check, then create the directory and its manifest."""
        self.check()
        (self.root / "candidates").mkdir(parents=True, exist_ok=True)
        if not (self.root / "sweep.json").exists():
            write_atomic(self.root / "sweep.json", dumps(self.identity))

    def folder(self, candidate_id: str) -> Path:
        path = self.root / "candidates" / candidate_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def read(self, candidate_id: str, name: str) -> dict[str, Any] | None:
        path = self.root / "candidates" / candidate_id / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # a file from before atomic writes; treated as missing

    def write(self, candidate_id: str, name: str, payload: dict[str, Any]) -> Path:
        return write_atomic(self.folder(candidate_id) / name, dumps(payload))

    def model_path(self, candidate_id: str) -> Path:
        return self.root / "candidates" / candidate_id / "model.onnx"
