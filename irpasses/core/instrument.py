"""Pass instruments: hooks around every pass (numeric checks, IR dumps, reproducers).

Timing, memory and node/weight deltas are recorded by the manager itself for every pass.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import onnx_ir as ir

if TYPE_CHECKING:
    from onnxpress.irpasses.core.manager import PassRecord, PipelineReport
    from onnxpress.irpasses.core.pass_base import Pass


class PassInstrument:
    """Override any hook; each gets the live model, which it must not modify."""

    def before_pipeline(self, model: ir.Model, passes: list[Pass]) -> None: ...

    def before_pass(self, pass_: Pass, model: ir.Model) -> None: ...

    def after_pass(self, pass_: Pass, model: ir.Model, record: PassRecord) -> None: ...

    def after_failure(self, pass_: Pass | None, model: ir.Model, error: BaseException, passes_run: list[str]) -> None: ...

    def after_pipeline(self, model: ir.Model, report: PipelineReport) -> None: ...


class DumpIR(PassInstrument):
    """Write the textual IR after every pass that changed the model (``NN-pass-name.txt``)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.count = 0

    def before_pipeline(self, model: ir.Model, passes: list[Pass]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "00-input.txt").write_text(str(model.graph))

    def after_pass(self, pass_: Pass, model: ir.Model, record: PassRecord) -> None:
        self.count += 1
        if record.modified:
            (self.folder / f"{self.count:02d}-{record.name}.txt").write_text(str(model.graph))


class Reproducer(PassInstrument):
    """On failure, write the input model and the pipeline text so the failure can be replayed.

    Give ``source`` (the input file) to copy it; otherwise the input is serialized before the pipeline runs.
    """

    def __init__(self, folder: str | os.PathLike[str], pipeline_text: str, source: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder)
        self.pipeline_text = pipeline_text
        self.source = Path(source) if source else None
        self._snapshot: bytes | None = None
        self.written: Path | None = None

    def before_pipeline(self, model: ir.Model, passes: list[Pass]) -> None:
        if self.source is None:
            self._snapshot = ir.to_proto(model).SerializeToString()

    def after_failure(self, pass_: Pass | None, model: ir.Model, error: BaseException, passes_run: list[str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / "input.onnx"
        if self.source is not None:
            shutil.copyfile(self.source, target)
            data_dir = self.source.parent
            for f in data_dir.iterdir():  # external data files travel with the model
                if f != self.source and f.is_file() and not f.suffix == ".onnx":
                    shutil.copyfile(f, self.folder / f.name)
        elif self._snapshot is not None:
            target.write_bytes(self._snapshot)
        failing = pass_.spec() if pass_ is not None else "(end of pipeline)"
        (self.folder / "pipeline.txt").write_text(self.pipeline_text + "\n")
        (self.folder / "README.txt").write_text(
            f"failed at: {failing}\npasses run before: {', '.join(passes_run) or 'none'}\nerror: {error}\n\n"
            f"replay: onnxpress opt input.onnx -o out.onnx -p \"$(cat pipeline.txt)\" --verify-each --debug\n"
        )
        self.written = self.folder
