"""Pass infrastructure: the pass contract, analyses, the verifying pass manager, plug-ins, pipelines."""

from onnxpress.irpasses.core.analysis import Analysis, AnalysisManager
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.errors import (
    BackendUnavailableError,
    DataError,
    ExternalDataError,
    InvalidModelError,
    NumericMismatchError,
    OnnxpressError,
    PassFailed,
    PassOptionError,
    PipelineError,
    PluginError,
    UnsafeOutputError,
    VerificationError,
)
from onnxpress.irpasses.core.instrument import DumpIR, PassInstrument, Reproducer
from onnxpress.irpasses.core.manager import (
    PassManager,
    PassRecord,
    PipelineReport,
    bisect,
    plan_pipeline,
)
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.pipeline_text import PassSpec, build_passes, parse_pipeline
from onnxpress.irpasses.core.properties import (
    CALIBRATED,
    CONSTANTS_LIFTED,
    QDQ_FORM,
    SHAPES_INFERRED,
    TOPO_SORTED,
    Property,
)
from onnxpress.irpasses.core.registry import (
    API_VERSION,
    Plugin,
    Registry,
    default_registry,
)

__all__ = [
    "API_VERSION",
    "CALIBRATED",
    "CONSTANTS_LIFTED",
    "QDQ_FORM",
    "SHAPES_INFERRED",
    "TOPO_SORTED",
    "Analysis",
    "AnalysisManager",
    "BackendUnavailableError",
    "DataError",
    "DumpIR",
    "ExternalDataError",
    "InvalidModelError",
    "NumericMismatchError",
    "OnnxpressError",
    "Pass",
    "PassContext",
    "PassFailed",
    "PassInstrument",
    "PassManager",
    "PassOptionError",
    "PassRecord",
    "PassResult",
    "PassSpec",
    "PipelineError",
    "PipelineReport",
    "Plugin",
    "PluginError",
    "Property",
    "Registry",
    "Reproducer",
    "UnsafeOutputError",
    "VerificationError",
    "bisect",
    "build_passes",
    "default_registry",
    "parse_pipeline",
    "plan_pipeline",
]
