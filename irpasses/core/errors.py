"""Typed errors. Every message names the pass, node or tensor involved and what was expected.

User errors (bad model, bad pipeline, bad data) exit the CLI with code 2; internal failures with 1.
Causes are always chained (``raise ... from err``) so ``--debug`` shows the full story.
"""

from __future__ import annotations


class OnnxpressError(Exception):
    """Base of every error onnxpress raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidModelError(OnnxpressError):
    """The input is not a usable ONNX model (unreadable, truncated, cyclic, dangling values...)."""


class ExternalDataError(InvalidModelError):
    """An external-data reference is missing, truncated, or points outside the model's folder."""


class UnsafeOutputError(OnnxpressError):
    """Writing the output would overwrite an input file."""


class PipelineError(OnnxpressError):
    """The pipeline text or recipe is malformed, names an unknown pass, or cannot be scheduled."""


class PassOptionError(PipelineError):
    """A pass option is unknown or has a value of the wrong type."""


class PluginError(OnnxpressError):
    """A plug-in is broken, has the wrong API version, or registers a name that is taken."""


class DataError(OnnxpressError):
    """Sample or calibration data does not match the model's inputs."""


class VerificationError(OnnxpressError):
    """The graph is structurally invalid after a pass (the pass produced bad IR)."""

    exit_code = 1

    def __init__(self, message: str, *, pass_name: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.pass_name = pass_name


class NumericMismatchError(OnnxpressError):
    """A rewrite changed the model's outputs beyond the stated tolerance."""

    exit_code = 1

    def __init__(self, message: str, *, pass_name: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.pass_name = pass_name


class PassFailed(OnnxpressError):
    """A pass raised an unexpected exception; names the pass and those that ran before it."""

    exit_code = 1

    def __init__(self, pass_name: str, passes_before: list[str], cause: BaseException) -> None:
        before = ", ".join(passes_before) if passes_before else "none"
        super().__init__(
            f"pass '{pass_name}' failed: {type(cause).__name__}: {cause} (passes run before it: {before})",
            hint="rerun with --debug for the traceback; a reproducer is written when --reproducer-dir is set",
        )
        self.pass_name = pass_name


class BackendUnavailableError(OnnxpressError):
    """A backend or runtime needed for the job is not installed or cannot run here."""
