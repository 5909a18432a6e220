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
        "inputs-to-constants": f"{_P}.cleanup.inputs_to_constants:InputsToConstants",
        "graphsurgeon": f"{_P}.core.gs_bridge:GraphSurgeonPass",
        "fixpoint": f"{_P}.core.fixpoint:FixedPoint",
        "fold-constants": f"{_P}.fusion.fold_constants:FoldConstants",
        "simplify": f"{_P}.fusion.simplify:Simplify",
        "fold-batchnorm": f"{_P}.fusion.fold_batchnorm:FoldBatchNorm",
        "fuse-pad-conv": f"{_P}.fusion.fuse_pad_conv:FusePadConv",
        "fuse-conv-bias": f"{_P}.fusion.fuse_conv_bias:FuseConvBias",
        "fuse-conv-affine": f"{_P}.fusion.fuse_conv_affine:FuseConvAffine",
        "fuse-hardswish": f"{_P}.fusion.fuse_hardswish:FuseHardSwish",
        "fuse-matmul-add": f"{_P}.fusion.fuse_matmul_add:FuseMatMulAdd",
        "fuse-layernorm": f"{_P}.fusion.fuse_layernorm:FuseLayerNorm",
        "fuse-gelu": f"{_P}.fusion.fuse_gelu:FuseGelu",
        "fuse-activations": f"{_P}.fusion.fuse_activations:FuseActivations",
        "fuse-attention": f"{_P}.fusion.fuse_attention:FuseAttention",
        "weight-only": f"{_P}.quant.weight_only:WeightOnly",
        "qdq": f"{_P}.quant.qdq:QDQ",
        "dynamic-quant": f"{_P}.quant.dynamic:DynamicQuant",
        "smooth-quant": f"{_P}.quant.smooth_quant:SmoothQuant",
        "auto-quant": f"{_P}.quant.auto:AutoQuant",
        "convert-opset": f"{_P}.cleanup.convert_opset:ConvertOpset",
        "shape-cse": f"{_P}.fusion.shape_cse:ShapeCse",
        "legalize-kernels": f"{_P}.lowering.legalize_kernels:LegalizeKernels",
        "cluster": f"{_P}.clustering.cluster:Cluster",
        "entropy-code": f"{_P}.clustering.entropy_code:EntropyCode",
        "prune": f"{_P}.sparsity.prune:Prune",
        "permute-channels": f"{_P}.sparsity.permute_channels:PermuteChannels",
        "lowrank": f"{_P}.lowrank.lowrank:LowRank",
    },
    backends={
        "ort": "onnxpress.backends.ort.backend:OrtBackend",
        "tensorrt": "onnxpress.backends.tensorrt.backend:TensorRTBackend",
        "openvino": "onnxpress.backends.openvino.backend:OpenVinoBackend",
    },
    # Frameworks other than ONNX, lowered by their maintained converters (frontends.loader picks one).
    frontends={
        "sklearn": "onnxpress.frontends.sklearn:FRONTEND",
        "pytorch": "onnxpress.frontends.pytorch:FRONTEND",
        "tensorflow": "onnxpress.frontends.tensorflow:FRONTEND",
        "tflite": "onnxpress.frontends.tflite:FRONTEND",
    },
    pipelines={
        "cleanup": "lift-constants,remove-identity,cse,dedup-initializers,dead-code,topo-sort",
        "noop": "topo-sort",
        "fuse": "simplify,shape-cse,fold-batchnorm,fuse-pad-conv,fuse-conv-affine,fuse-conv-bias,fuse-hardswish,fuse-matmul-add,fuse-layernorm,fuse-gelu,fuse-activations,fuse-attention",
        "w4": "convert-opset{min=21},optimize,weight-only{bits=4,block=32,accuracy_level=4}",
        "w8": "convert-opset{min=21},optimize,weight-only{bits=8,block=32,accuracy_level=4}",
        "int8": "convert-opset{min=17},optimize,qdq,dedup-initializers,dead-code",
        "int8-dynamic": "optimize,dynamic-quant",
        "auto": "convert-opset{min=17},optimize,auto-quant,dedup-initializers,dead-code",
        "int8-smooth": "optimize,dynamic-quant{smooth=0.5,outliers=6}",
        "auto-dynamic": 'optimize,dynamic-quant{smooth=0.5,outliers=6,fidelity="cosine>=0.9994",eval_samples=32}',
        "fp8": "convert-opset{min=19},optimize,qdq{activations=fp8},dedup-initializers,dead-code",
        "cluster4": "convert-opset{min=21},optimize,cluster{bits=4}",
        "max-compress": 'convert-opset{min=21},optimize,cluster{grid=uniform,bits=8,fidelity="cosine>=0.999",eval_samples=8},entropy-code',
        "sparse-2of4": 'optimize,permute-channels{pattern=2:4},prune{pattern=2:4,method=auto,fidelity="cosine>=0.995"}',
        "sparse-int8": 'convert-opset{min=17},optimize,permute-channels{pattern=2:4},prune{pattern=2:4,method=auto,fidelity="cosine>=0.995"},qdq,dedup-initializers,dead-code',
        "lowrank-auto": 'optimize,lowrank{fidelity="cosine>=0.999"}',
        "lowrank-int8": 'convert-opset{min=17},optimize,lowrank{fidelity="cosine>=0.999"},qdq,dedup-initializers,dead-code',
        "optimize": "inputs-to-constants,fixpoint(cleanup,fold-constants,fuse),topo-sort",
    },
)
