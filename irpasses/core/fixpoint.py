"""fixpoint: run a group of passes again and again until none of them changes the model.

Written ``fixpoint{max=8}(cleanup,fold-constants,fuse)`` in a pipeline. The manager runs the children one by
one with the usual verification and instruments; records carry the iteration (``fold-constants#2``).
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.pass_base import Pass, PassResult


@dataclasses.dataclass
class FixedPoint(Pass):
    """Repeat the enclosed passes until none changes the model (at most max iterations)."""

    name = "fixpoint"
    max: int = 8
    passes: list[Pass] = dataclasses.field(default_factory=list, repr=False, compare=False, metadata={"python_only": True})

    def __post_init__(self) -> None:
        if self.max < 1:
            raise ValueError(f"max must be at least 1, got {self.max}")

    def spec(self) -> str:
        inner = ",".join(p.spec() for p in self.passes)
        head = "fixpoint" if self.max == 8 else f"fixpoint{{max={self.max}}}"
        return f"{head}({inner})"

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        """Outside a PassManager (plain onnx-ir use): loop without per-pass reporting."""
        schedule, modified = Schedule(), False
        for _ in range(self.max):
            changed = False
            for index, pass_ in enumerate(self.passes):
                if schedule.due(index):
                    changed |= schedule.ran(index, bool(pass_.run(model, ctx).modified))
            modified |= changed
            if not changed:
                break
        return self.result(model, modified)


class Schedule:
    """Which passes of a fixpoint group still need to run: a pass that changed nothing need not run again
    until another pass has changed the model since (passes are deterministic functions of the model). Saves
    the last, all-no-op round and most of the others (PP-OCR cls: 49 of 60 runs changed nothing)."""

    def __init__(self) -> None:
        self.step = 0
        self.last_change = -1
        self.last_run: dict[int, int] = {}

    def due(self, index: int) -> bool:
        return self.last_run.get(index, -1) <= self.last_change

    def ran(self, index: int, modified: bool) -> bool:
        self.step += 1
        self.last_run[index] = self.step
        if modified:
            self.last_change = self.step
        return modified
