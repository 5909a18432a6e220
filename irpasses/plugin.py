"""The built-in plug-in manifest: onnxpress registers its own passes and backends exactly as a vendor's package would.

Kept import-light: entries are ``"module:Class"`` strings, loaded when a pass is first asked for by name.
"""

from onnxpress.irpasses.core.registry import API_VERSION, Plugin

_P = "onnxpress.irpasses"

PLUGIN = Plugin(
    api_version=API_VERSION,
    passes={
        "dead-code": f"{_P}.cleanup.dead_code:DeadCode",
        "topo-sort": f"{_P}.cleanup.topo_sort:TopoSort",
        "lift-constants": f"{_P}.cleanup.lift_constants:LiftConstants",
        "remove-identity": f"{_P}.cleanup.remove_identity:RemoveIdentity",
        "cse": f"{_P}.cleanup.cse:CommonSubexpressions",
        "dedup-initializers": f"{_P}.cleanup.dedup_initializers:DedupInitializers",
        "infer-shapes": f"{_P}.cleanup.infer_shapes:InferShapes",
        "set-ir-version": f"{_P}.cleanup.set_ir_version:SetIrVersion",
        "anonymize-dims": f"{_P}.cleanup.anonymize_dims:AnonymizeDims",
        "graphsurgeon": f"{_P}.core.gs_bridge:GraphSurgeonPass",
    },
    backends={
        "ort": "onnxpress.backends.ort.backend:OrtBackend",
        "tensorrt": "onnxpress.backends.tensorrt.backend:TensorRTBackend",
    },
    pipelines={
        "cleanup": "lift-constants,remove-identity,cse,dedup-initializers,dead-code,topo-sort",
        "noop": "topo-sort",
    },
)
