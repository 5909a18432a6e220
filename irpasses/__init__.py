"""Graph rewrites over onnx-ir: the pass infrastructure (``core``), analyses and pass families."""
